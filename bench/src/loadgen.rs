//! Driving `tokenpipe loadgen`: one load is one process, pinned with its own `--cpus`, bounded in count
//! and time, whose `--json` report is read back. Its fields are described in the README (`--json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::procs::Proc;

/// One load to run.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub body: String,
    pub shape: Shape,
    /// No stream starts after this.
    pub duration: Duration,
    /// A stream not ended this long after its start fails (and the run stops by itself at duration +
    /// timeout + 1 s, whatever happens).
    pub timeout: Duration,
    /// The upstream's pause between events, for the "sustained" verdict.
    pub pacing_ms: u64,
    pub cpus: Vec<usize>,
    /// A CA to trust (https URLs only).
    pub ca: Option<PathBuf>,
}

/// Closed loop (N streams in flight, `total` in all) or open loop (a rate).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Closed { streams: u64, total: Option<u64> },
    Open { rate: f64, total: u64 },
}

impl Load {
    /// Starts the load generator; its JSON goes to `json`, its stderr to `log`.
    pub fn start(
        &self,
        tokenpipe: &Path,
        name: &str,
        json: &Path,
        log: &Path,
    ) -> Result<Proc, String> {
        let mut cmd = Command::new(tokenpipe);
        cmd.arg("loadgen")
            .args(["--url", &self.url, "--body", &self.body])
            .args(["--duration", &format!("{}ms", self.duration.as_millis())])
            .args(["--timeout", &format!("{}ms", self.timeout.as_millis())])
            .args(["--pacing-ms", &self.pacing_ms.max(1).to_string()])
            .args(["--json", "--quiet"]);
        match self.shape {
            Shape::Closed { streams, total } => {
                cmd.args(["--streams", &streams.to_string()]);
                if let Some(total) = total {
                    cmd.args(["--total", &total.to_string()]);
                }
            }
            Shape::Open { rate, total } => {
                cmd.args(["--rate", &format!("{rate}"), "--total", &total.to_string()]);
            }
        }
        if !self.cpus.is_empty() {
            let list: Vec<String> = self.cpus.iter().map(|c| c.to_string()).collect();
            cmd.args(["--cpus", &list.join(",")]);
        }
        if let Some(ca) = &self.ca {
            cmd.arg("--ca").arg(ca);
        }
        // Pinned by its own --cpus (per worker thread), so the process itself is not pinned here.
        Proc::start(name, cmd, &[], json, log)
    }

    /// The longest the load generator can run: its own hard stop, plus a margin for starting and exiting.
    pub fn bound(&self) -> Duration {
        self.duration + self.timeout + Duration::from_secs(5)
    }
}

/// Waits for a started load generator (at most `load.bound()`) and reads its report.
pub fn finish(mut proc: Proc, load: &Load, json: &Path) -> Result<Report, String> {
    let status = proc.wait(load.bound())?;
    let text = std::fs::read_to_string(json).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "loadgen exited with {status}:\n{}",
            proc.log_tail()
        ));
    }
    let mut report: Report = serde_json::from_str(&text)
        .map_err(|e| format!("loadgen's JSON ({}): {e}", json.display()))?;
    report.raw = serde_json::from_str(&text).unwrap_or_default();
    Ok(report)
}

/// The fields of loadgen's `--json` report that the benchmark uses; `raw` keeps all of it.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub started: u64,
    pub completed: u64,
    pub failed: Failed,
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
    pub events: u64,
    pub first_event_us: Latency,
    pub gap_us: Latency,
    pub sustained: Option<Sustained>,
    #[serde(skip)]
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Failed {
    pub total: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Sustained {
    pub count: u64,
}

impl Report {
    /// Streams sustained (completed with no gap above 10x the pacing), 0 if not judged.
    pub fn sustained(&self) -> u64 {
        self.sustained.map_or(0, |s| s.count)
    }
}
