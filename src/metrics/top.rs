//! `tokenpipe top`: watch a running relay through its `GET /metrics`.
//!
//! The thing a learner watches while a load runs: every interval, how many streams are open, how many
//! chunks and bytes went out, how long first tokens took, how busy each event loop was, how many system
//! calls one relayed chunk cost, and how many descriptors are open.
//!
//! ```text
//!   every interval:  client::get ──text──▶ Exposition::parse ──┐
//!                                      (the previous scrape) ──┴─▶ Figures::between ──▶ render::{row, screen}
//! ```
//!
//! - [`client`]: a blocking `GET` over `std::net::TcpStream`, with time-outs (plain `http://` only);
//! - [`expo`]: the Prometheus text format, read leniently (garbage is skipped, never a panic);
//! - [`figures`]: two scrapes and the wall time between them in, one row of figures out: a pure function;
//! - [`render`]: the figures as a line (plain mode, for logs and pipes) or as a screen (a terminal).
//!
//! A relay that does not answer is reported, and asked again at the next interval: `top` keeps going
//! until `--count` refreshes have been shown or it is stopped (Ctrl-C).

mod client;
pub mod expo;
pub mod figures;
pub mod render;

#[cfg(test)]
mod tests_client;
#[cfg(test)]
mod tests_figures;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_render;
#[cfg(test)]
mod tests_run;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

pub use client::{MetricsUrl, get};
pub use expo::Exposition;
pub use figures::Figures;

/// How `top` runs (from `tokenpipe top`'s options: `config::TopArgs`).
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// Where the relay's metrics are.
    pub target: MetricsUrl,
    /// Time between two refreshes.
    pub interval: Duration,
    /// Stop after this many refreshes; `None`: run until stopped.
    pub count: Option<u64>,
    /// One line per refresh, no screen handling (for logs and pipes).
    pub plain: bool,
}

/// Rows kept on the screen under the summary.
const HISTORY: usize = 10;

/// Runs `top` on stdout; the exit status: success once the relay has answered at least once (or stdout
/// was closed, as by `top | head`), failure if it never did.
pub fn main(options: &TopOptions) -> ExitCode {
    let timeout = scrape_timeout(options.interval);
    let scrape = || get(&options.target, timeout);
    let stdout = io::stdout();
    match run(options, scrape, &mut stdout.lock()) {
        Ok(true) | Err(_) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "tokenpipe top: no scrape of {} succeeded; is the relay running there?",
                options.target
            );
            ExitCode::FAILURE
        }
    }
}

/// How long one scrape may take: the interval, but at least a second (a busy relay may answer a little
/// late) and at most five (a hung relay must not freeze the view for long).
pub fn scrape_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// The loop: a first scrape as the baseline, then one refresh per interval, each shown as a row (plain)
/// or a screen. `scrape` fetches the exposition text or says why it could not. Returns whether any scrape
/// succeeded; an error is a failed write to `out`.
pub fn run(
    options: &TopOptions,
    mut scrape: impl FnMut() -> Result<String, String>,
    out: &mut impl Write,
) -> io::Result<bool> {
    let mut view = View::new(options);
    view.start(out)?;
    // The earlier scrape and when it was asked for. Kept across failures: the next success then covers
    // the whole gap, and a relay that restarted meanwhile is seen by its counters going down.
    let mut earlier: Option<(Instant, Exposition)> = None;
    let mut reached = false;
    let mut next = Instant::now();
    let mut refreshes = 0u64;
    let mut baseline = true;
    loop {
        let asked = Instant::now();
        let result = read(&mut scrape);
        let time = render::clock(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        match result {
            Ok(later) => {
                reached = true;
                let elapsed = earlier.as_ref().map(|(at, _)| asked.duration_since(*at));
                let figures = Figures::between(
                    earlier.as_ref().map(|(_, e)| e),
                    &later,
                    elapsed.unwrap_or_default(),
                );
                // Without an earlier scrape only the levels are known. A plain row of them is shown
                // when the relay comes back after failures, not for the baseline: rows then begin
                // with whole figures. A screen shows them at once, rather than stay blank.
                if earlier.is_some() || !options.plain || !baseline {
                    view.show(out, &time, Ok(&figures), earlier.is_some())?;
                }
                earlier = Some((asked, later));
            }
            Err(why) => view.show(out, &time, Err(&why), true)?,
        }
        // The baseline is not a refresh: `--count N` shows N intervals.
        if !baseline {
            refreshes += 1;
        }
        baseline = false;
        if options.count.is_some_and(|count| refreshes >= count) {
            return Ok(reached);
        }
        next += options.interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // A scrape slower than the interval: start again from now rather than catch up in a burst.
            next = now;
        }
    }
}

/// One scrape, read; an answer without a single series is not a relay's /metrics.
fn read(scrape: &mut impl FnMut() -> Result<String, String>) -> Result<Exposition, String> {
    let text = scrape()?;
    let expo = Exposition::parse(&text);
    if expo.is_empty() {
        return Err(format!(
            "the answer holds no metrics ({} bytes, {} unreadable lines): is this the relay's /metrics?",
            text.len(),
            expo.unreadable
        ));
    }
    Ok(expo)
}

/// What has been shown: the rows kept for the screen.
struct View<'a> {
    options: &'a TopOptions,
    url: String,
    history: VecDeque<String>,
}

impl<'a> View<'a> {
    fn new(options: &'a TopOptions) -> View<'a> {
        View {
            options,
            url: options.target.url(),
            history: VecDeque::with_capacity(HISTORY + 1),
        }
    }

    /// Plain mode: what is watched, the legend and the column names, once.
    fn start(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.options.plain {
            return Ok(());
        }
        writeln!(
            out,
            "# tokenpipe top: {} every {}",
            self.url,
            render::interval_text(self.options.interval)
        )?;
        for line in render::LEGEND {
            writeln!(out, "{line}")?;
        }
        writeln!(out, "{}", render::header())?;
        out.flush()
    }

    /// One refresh: its row (plain), or the whole screen. `keep`: the row goes into the history (the
    /// baseline's, with no rates, does not).
    fn show(
        &mut self,
        out: &mut impl Write,
        time: &str,
        latest: Result<&Figures, &str>,
        keep: bool,
    ) -> io::Result<()> {
        let interval = self.options.interval;
        let line = match latest {
            Ok(figures) => render::row(time, figures),
            Err(why) => render::problem_row(time, &self.url, why, interval),
        };
        if self.options.plain {
            writeln!(out, "{line}")?;
            return out.flush();
        }
        if keep {
            self.history.push_back(line);
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        let history: Vec<String> = self.history.iter().cloned().collect();
        let frame = render::Frame {
            url: &self.url,
            interval,
            time,
            latest,
            history: &history,
        };
        out.write_all(render::screen(&frame).as_bytes())?;
        out.flush()
    }
}
