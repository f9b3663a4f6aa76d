//! The relay's side of observability: what it counts when a request ends, its access log line, and the
//! two routes that show the loop from outside (`GET /metrics`, and the teaching stall route).
//!
//! A request's [`Record`] is opened by the client driver when the request is complete and filled as the
//! exchange goes (route, upstream, first byte, first token, usage). When the answer is out
//! (`ClientApp::on_answered`), or the connection closes under it (`Relay::on_close`), [`ended`] counts it
//! once: the request counter with its labels, the duration histogram, the token usage, and one access log
//! line. A record is taken out of its connection to be counted, so no request is counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::client::{ClientConn, ClientState, Record};
use crate::metrics::{Departure, Registry, RelayMetrics, RequestKey, Tokens};

/// The status logged and counted for a request whose client left before any status was sent (nginx's
/// "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// Most milliseconds the stall route blocks for.
pub const MAX_STALL_MS: u64 = 10_000;

/// The format of the access log (`--access-log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// `key=value` words after the request line, for people.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
    Off,
}

impl AccessLog {
    /// Reads `json`, `text` or `off`.
    pub fn parse(s: &str) -> Result<AccessLog, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(AccessLog::Text),
            "json" => Ok(AccessLog::Json),
            "off" => Ok(AccessLog::Off),
            _ => Err(format!("expected json, text or off, not {s:?}")),
        }
    }
}

/// What a relay worker needs to observe itself.
#[derive(Debug, Clone)]
pub struct Observe {
    /// Every worker's figures, for `/metrics`.
    pub registry: Arc<Registry>,
    /// This worker's index in the registry.
    pub worker: usize,
    pub access_log: AccessLog,
    /// Serve `/debug/stall` (`--debug-stall-route`).
    pub debug_stall: bool,
}

impl Observe {
    /// A registry of one worker in front of `upstreams`, with the default access log: for a relay worker
    /// built on its own (tests, examples).
    pub fn standalone(upstreams: Vec<Arc<super::UpstreamTarget>>) -> Observe {
        let registry = Registry::new(Arc::default(), upstreams, 1, true, None);
        Observe {
            registry: Arc::new(registry),
            worker: 0,
            access_log: AccessLog::Text,
            debug_stall: false,
        }
    }

    /// This worker's relay figures.
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        self.registry
            .workers
            .get(self.worker)
            .cloned()
            .unwrap_or_else(|| Arc::new(RelayMetrics::new(false)))
    }
}

/// Names what entry `e` is doing, for the slow-iteration warning (`Handler::describe`): its kind, its
/// state and, for a client, its request.
pub fn describe(e: Option<&super::Entry>, upstream_socket: bool, last: Option<&str>) -> String {
    use super::exchange::Phase;
    let c = match e {
        Some(super::Entry::Client(c)) => c,
        Some(super::Entry::Idle(idle)) => {
            return format!("a pooled connection to upstream {}", idle.via);
        }
        None => return "an entry closed since".to_string(),
    };
    let request = match (&c.record, last) {
        (Some(r), _) => format!(" for {} {} ({})", r.method, r.path, r.id),
        (None, Some(last)) => format!(" after answering {last}"),
        (None, None) => String::new(),
    };
    let state = match &c.state {
        ClientState::AwaitingRequest => "awaiting a request".to_string(),
        ClientState::Replying { .. } => "replying".to_string(),
        ClientState::Lingering { .. } => "lingering".to_string(),
        ClientState::Serving(x) => {
            let phase = match x.phase {
                Phase::Resolving { .. } => "resolving",
                Phase::AwaitingUpstream { .. } => "awaiting the upstream",
                Phase::Streaming { .. } => "streaming",
            };
            format!("relaying via upstream {}, {phase}", x.via)
        }
    };
    let socket = if upstream_socket {
        "upstream socket of "
    } else {
        ""
    };
    format!("the {socket}client {} ({state}){request}", c.peer)
}

/// The request a worker answered last, and on which connection: its strings moved out of its record as
/// the record is dropped, so keeping them costs no allocation.
#[derive(Debug, Default)]
pub struct LastAnswered(Option<(crate::reactor::ConnId, &'static str, Box<str>)>);

impl LastAnswered {
    /// Keeps `record`'s method and path (it is done with them).
    pub fn keep(&mut self, id: crate::reactor::ConnId, record: &mut Record) {
        let method = record.method;
        let path = std::mem::take(&mut record.path);
        self.0 = Some((id, method, path));
    }

    /// "METHOD PATH" of the last request answered on `id`, if the last one was there.
    pub fn of(&self, id: crate::reactor::ConnId) -> Option<String> {
        match &self.0 {
            Some((on, method, path)) if *on == id => Some(format!("{method} {path}")),
            _ => None,
        }
    }
}

/// How a request ended, as the log and the counters need it.
pub struct Ended<'a> {
    pub record: &'a Record,
    /// The status sent (0: none was, the client left first).
    pub status: u16,
    /// Bytes the client's socket took for this answer.
    pub bytes: u64,
    pub now: Instant,
}

/// The answer to client `c`'s request of `record` is out, or `c` is closing: count the request and log it.
/// `closing`: the connection closes under it (the client left, or was dropped).
pub fn finished(
    o: &Observe,
    metrics: &RelayMetrics,
    worker: &str,
    c: &ClientConn<Box<super::exchange::Exchange>>,
    record: &mut Record,
    now: Instant,
) {
    let serving = matches!(c.state, ClientState::Serving(_));
    if serving {
        // Closed in the middle of an exchange: the client left (or its socket failed, or the worker
        // stopped), before or after its head went out.
        let before_head = c.out.taken() <= record.taken_before;
        metrics.departed(match before_head {
            true => Departure::BeforeHead,
            false => Departure::MidStream,
        });
        record.cut.get_or_insert("client_gone");
        if let ClientState::Serving(x) = &c.state {
            x.seen.usage_into(Some(record));
        }
    } else if !c.out.is_empty() {
        // A whole answer was queued, but the connection closed before the client took all of it.
        record.cut.get_or_insert("client_gone");
    }
    // A status queued but never taken was not sent.
    let sent = c.out.taken() > record.taken_before;
    let status = if sent || !serving { c.status } else { 0 };
    let bytes = c.out.taken().saturating_sub(record.taken_before);
    let e = Ended {
        record,
        status,
        bytes,
        now,
    };
    ended(o, metrics, worker, e);
}

/// Counts the request of `e` and writes its access log line.
pub fn ended(o: &Observe, metrics: &RelayMetrics, worker: &str, e: Ended<'_>) {
    let r = e.record;
    let status = match e.status {
        0 => CLIENT_CLOSED,
        s => s,
    };
    let key = RequestKey {
        route: r.route,
        upstream: r.upstream,
        status,
    };
    let usage = r.usage.as_ref().map(|u| {
        let model = u.model.as_deref().unwrap_or("unknown");
        let tokens = Tokens {
            input: u.input,
            output: u.output,
        };
        (model, tokens)
    });
    let took = e.now.saturating_duration_since(r.started);
    metrics.request(key, took, usage);
    if metrics.enabled
        && let Some(ttfb) = r.since_start(r.first_byte)
    {
        metrics.ttfb.record_duration(ttfb);
    }
    if o.access_log == AccessLog::Off
        || !log::log_enabled!(target: "tokenpipe::access", log::Level::Info)
    {
        return;
    }
    let upstream = r.upstream.map(|i| o.registry.upstream_name(i));
    let line = match o.access_log {
        AccessLog::Json => json_line(r, status, e.bytes, took, upstream),
        _ => text_line(r, status, e.bytes, took, upstream),
    };
    log::info!(target: "tokenpipe::access", "{worker}: {line}");
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `ID METHOD PATH STATUS BYTES DURATION` then `key=value` words; a value that is not known is left out.
fn text_line(
    r: &Record,
    status: u16,
    bytes: u64,
    took: Duration,
    upstream: Option<&str>,
) -> String {
    use std::fmt::Write;
    let mut line = format!(
        "{} {} {} {status} {bytes}B {:.3}ms",
        r.id,
        r.method,
        r.path,
        ms(took)
    );
    if let Some(t) = r.since_start(r.first_byte) {
        let _ = write!(line, " ttfb={:.3}ms", ms(t));
    }
    if let Some(t) = r.since_start(r.first_token) {
        let _ = write!(line, " ttft={:.3}ms", ms(t));
    }
    if let Some(u) = upstream {
        let _ = write!(line, " upstream={u}");
    }
    if let Some(reused) = r.reused {
        let _ = write!(line, " reused={reused}");
    }
    if let Some(u) = &r.usage {
        let model = u.model.as_deref().unwrap_or("unknown");
        let _ = write!(
            line,
            " model={model} tokens_in={} tokens_out={}",
            u.input, u.output
        );
    }
    if let Some(cut) = r.cut {
        let _ = write!(line, " cut={cut}");
    }
    line
}

/// The same as one JSON object (`serde_json` escapes whatever a path or a model name holds).
fn json_line(
    r: &Record,
    status: u16,
    bytes: u64,
    took: Duration,
    upstream: Option<&str>,
) -> String {
    let opt_ms = |at| r.since_start(at).map(ms);
    serde_json::json!({
        "request_id": r.id.to_string(),
        "method": r.method,
        "path": &*r.path,
        "route": r.route,
        "status": status,
        "bytes": bytes,
        "duration_ms": ms(took),
        "ttfb_ms": opt_ms(r.first_byte),
        "ttft_ms": opt_ms(r.first_token),
        "upstream": upstream,
        "reused": r.reused,
        "model": r.usage.as_ref().and_then(|u| u.model.as_deref()),
        "tokens_in": r.usage.as_ref().map(|u| u.input),
        "tokens_out": r.usage.as_ref().map(|u| u.output),
        "cut": r.cut,
    })
    .to_string()
}

/// Leaves exactly one `X-Request-Id` field in `headers`, saying `id`: a pass-through forwards it, and the
/// simple route copies it into the request it builds (`rebuild::exchange_for`).
pub fn carry_request_id(headers: &mut Vec<(String, Vec<u8>)>, id: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("x-request-id"));
    headers.push(("X-Request-Id".to_string(), id.as_bytes().to_vec()));
}

/// The milliseconds a stall request asks for: `ms=N` in its query, at most [`MAX_STALL_MS`].
pub fn stall_ms(query: Option<&str>) -> Result<u64, String> {
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("ms="))
        .ok_or("ask for a stall with ?ms=N")?;
    match ms.parse::<u64>() {
        Ok(n) if n <= MAX_STALL_MS => Ok(n),
        _ => Err(format!(
            "ms must be a whole number from 0 to {MAX_STALL_MS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::client::record::Usage;

    fn record() -> Record {
        let now = Instant::now();
        Record {
            started: now,
            method: "POST",
            path: "/v1/chat/completions".into(),
            id: crate::conn::client::record::RequestId::Given("req-1".into()),
            route: "passthrough",
            upstream: Some(0),
            reused: Some(true),
            first_byte: Some(now + Duration::from_millis(3)),
            first_token: Some(now + Duration::from_millis(5)),
            usage: Some(Usage {
                model: Some("gpt \"x\"".into()),
                input: 7,
                output: 9,
            }),
            cut: None,
            taken_before: 0,
        }
    }

    #[test]
    fn the_lines_say_what_is_known() {
        let r = record();
        let took = Duration::from_millis(12);
        let text = text_line(&r, 200, 345, took, Some("openai"));
        assert_eq!(
            text,
            "req-1 POST /v1/chat/completions 200 345B 12.000ms ttfb=3.000ms ttft=5.000ms \
             upstream=openai reused=true model=gpt \"x\" tokens_in=7 tokens_out=9"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json_line(&r, 200, 345, took, Some("openai"))).unwrap();
        assert_eq!(json["model"], "gpt \"x\"");
        assert_eq!(json["tokens_out"], 9);
        assert_eq!(json["ttft_ms"], 5.0);
        assert_eq!(json["cut"], serde_json::Value::Null);
    }

    #[test]
    fn the_stall_route_reads_a_bounded_ms() {
        assert_eq!(stall_ms(Some("ms=50")), Ok(50));
        assert_eq!(stall_ms(Some("x=1&ms=0")), Ok(0));
        assert!(stall_ms(Some("ms=10001")).is_err());
        assert!(stall_ms(Some("ms=-1")).is_err());
        assert!(stall_ms(None).is_err());
    }

    #[test]
    fn access_log_formats_parse() {
        assert_eq!(AccessLog::parse("JSON"), Ok(AccessLog::Json));
        assert_eq!(AccessLog::parse("off"), Ok(AccessLog::Off));
        assert!(AccessLog::parse("xml").is_err());
    }
}
