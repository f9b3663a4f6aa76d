//! Servers started inside the test process with `tokenpipe::Server::start`, for tests that need to see
//! inside: the relay's counters (`Running::relay_stats`) and the workers' system-call counts
//! (`Running::stats`); and mock upstreams (`Server::start_mock`), which start faster than a process.
//! Tests of the command line keep spawning the binary ([`super::Proc`]).

use super::*;
use tokenpipe::config::{Config, DrainPlan, FdLimit, LoopConfig, MockConfig};
use tokenpipe::mock::script::MockFormat;
use tokenpipe::relay::dns::Resolver;
use tokenpipe::relay::providers::{Provider, parse_upstream_url};
use tokenpipe::{Running, Server};

/// A relay running in this process; stopped (its workers joined) on drop.
pub struct InProcess {
    running: Option<Running>,
    pub addr: SocketAddr,
}

impl InProcess {
    /// A one-worker relay on 127.0.0.1:0 in front of the plain-HTTP OpenAI-compatible `upstream_url`, with
    /// the process's descriptor limit left alone; `configure` may change any other option.
    pub fn relay(upstream_url: &str, configure: impl FnOnce(&mut Config)) -> InProcess {
        let resolver = Resolver::new().expect("resolver");
        InProcess::relay_with(upstream_url, resolver, configure)
    }

    /// [`InProcess::relay`] with the test's own name resolution.
    pub fn relay_with(
        upstream_url: &str,
        resolver: Resolver,
        configure: impl FnOnce(&mut Config),
    ) -> InProcess {
        let origin = parse_upstream_url(upstream_url).expect("upstream url");
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), Provider::OpenAi, origin);
        if let Some(upstream) = config.first_upstream() {
            upstream.model = MODEL.to_string();
        }
        config.common.fd_limit = FdLimit::Keep;
        configure(&mut config);
        let running = Server::start_with(config, resolver).expect("start the relay in process");
        InProcess {
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// A one-worker mock upstream on 127.0.0.1:0: `tokens` tokens per answer (unless a request asks for
    /// fewer), `interval` between events. Every provider's paths; any request may ask it for a fault
    /// (docs/04-the-mock-upstream.md, and [`super::fault_prompt`]).
    pub fn mock(tokens: u32, interval: Duration) -> InProcess {
        let running = Server::start_mock(MockConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            format: MockFormat::OpenAi,
            tokens,
            interval,
            common: LoopConfig {
                fd_limit: FdLimit::Keep,
                ..LoopConfig::default()
            },
        })
        .expect("start the mock in process");
        InProcess {
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A mock's counters, as its `GET /stats` serves them.
    pub fn mock_stats(&self) -> serde_json::Value {
        self.running().mock_stats().expect("a mock has counters")
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Starts a drain (returns at once; [`InProcess::wait`] returns when it is over).
    pub fn drain(&self, plan: DrainPlan) {
        self.running().drain(plan);
    }

    /// Waits until the relay is done (after a drain), bounded by `within`: what the drain did, or why the
    /// relay stopped.
    pub fn wait(mut self, within: Duration) -> Result<tokenpipe::server::Drained, String> {
        let running = self.running.take().expect("running");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(running.wait());
        });
        rx.recv_timeout(within)
            .unwrap_or_else(|_| panic!("the relay did not finish within {within:?}"))
    }

    /// The relay's counters now.
    pub fn counts(&self) -> tokenpipe::relay::RelayCounts {
        self.running().relay_stats().expect("a relay has counters")
    }

    /// The relay's counters once `settled` holds for them (at most 5 s). A client may have its last
    /// byte a moment before the worker that sent it counts the stream as complete.
    pub fn counts_when(
        &self,
        settled: impl Fn(&tokenpipe::relay::RelayCounts) -> bool,
    ) -> tokenpipe::relay::RelayCounts {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counts = self.counts();
            if settled(&counts) || Instant::now() > deadline {
                return counts;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}
