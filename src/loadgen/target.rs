//! What every stream of a run asks for, and of whom: the address, the request's bytes, and TLS.
//!
//! All of it is worked out once, before the workers start: the URL is parsed and its host resolved (a
//! blocking lookup, which is fine before the loop runs, and keeps names out of the loop; [`pick`] says
//! which address of several is used), and the request
//! is written out once as bytes that every stream sends as they are. A stream's request costs no
//! allocation and no formatting.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use url::{Host, Url};

use crate::conn::tls;

use super::Plan;

/// The target of a run (module docs).
#[derive(Debug, Clone)]
pub struct LoadTarget {
    /// The first address the URL's host resolved to.
    pub addr: SocketAddr,
    /// The whole request: head and body.
    pub request: Arc<[u8]>,
    /// For `https`: the roots its certificate must chain to (Mozilla's, and `--ca`), and the name it must
    /// carry. Each worker makes its own client configuration from them, with its own session cache.
    pub tls: Option<(Arc<RootCertStore>, ServerName<'static>)>,
}

impl LoadTarget {
    /// The target `plan` describes; an error names what is wrong (the URL, the CA file, the lookup).
    pub fn new(plan: &Plan) -> Result<LoadTarget, String> {
        let url = Url::parse(&plan.url).map_err(|e| format!("--url {}: {e}", plan.url))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "--url {}: {other}:// is not http or https",
                    plan.url
                ));
            }
        };
        let host = url
            .host()
            .ok_or_else(|| format!("--url {}: no host", plan.url))?;
        let addrs = url
            .socket_addrs(|| None)
            .map_err(|e| format!("--url {}: cannot resolve the host: {e}", plan.url))?;
        let addr =
            pick(&addrs).ok_or_else(|| format!("--url {}: the host has no address", plan.url))?;
        let tls = match https {
            true => {
                let name = match host {
                    Host::Domain(d) => d.to_string(),
                    Host::Ipv4(ip) => ip.to_string(),
                    Host::Ipv6(ip) => ip.to_string(),
                };
                let roots = tls::root_store(plan.ca.as_deref())?;
                Some((Arc::new(roots), tls::server_name(&name)?))
            }
            false if plan.ca.is_some() => {
                return Err(format!("--ca is for an https:// --url, not {}", plan.url));
            }
            false => None,
        };
        // `host_str` keeps an IPv6 address in brackets, as the Host field wants it; the port is left out
        // when it is the scheme's own.
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let request = request_bytes(plan, &authority, &target);
        Ok(LoadTarget {
            addr,
            request: request.into(),
            tls,
        })
    }
}

/// The address every stream connects to. A name with several addresses (`localhost` is often `::1` and
/// `127.0.0.1`, while a server listens on one) gets a probe: a blocking connect to each in turn, before the
/// run, and the first that accepts is used (the probe is closed at once). None accepts: the first, and the
/// streams' connects report why.
fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    if let [one] = addrs {
        return Some(*one);
    }
    let probe = |a: &&SocketAddr| TcpStream::connect_timeout(a, PROBE_TIMEOUT).is_ok();
    addrs.iter().find(probe).or(addrs.first()).copied()
}

/// How long the probe of one address may take ([`pick`]).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The request of every stream: `plan`'s method and headers to `target` at `authority`, then the body.
///
/// Ours are `Host`, `User-Agent`, `Accept: text/event-stream`, `Content-Type: application/json` and
/// `Content-Length` (when there is a body), and `Connection: close` unless connections are kept alive: a
/// client that will not reuse a connection says so, and the server may close it first (its side then
/// keeps the `TIME_WAIT`, not ours, whose ports a large run needs). A `--header` of the same name
/// replaces ours (`Content-Length` is always ours: it must be the body's).
pub fn request_bytes(plan: &Plan, authority: &str, target: &str) -> Vec<u8> {
    let given = |name: &str| {
        plan.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let mut head = format!("{} {target} HTTP/1.1\r\n", plan.method);
    let mut ours = |name: &str, value: &str| {
        if !given(name) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    };
    ours("Host", authority);
    ours(
        "User-Agent",
        concat!("tokenpipe-loadgen/", env!("CARGO_PKG_VERSION")),
    );
    ours("Accept", "text/event-stream");
    if !plan.body.is_empty() {
        ours("Content-Type", "application/json");
    }
    if !plan.keep_alive {
        ours("Connection", "close");
    }
    for (name, value) in &plan.headers {
        if !name.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !plan.body.is_empty() || matches!(plan.method.as_str(), "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", plan.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&plan.body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::Mode;

    fn plan(url: &str) -> Plan {
        Plan::example(url, Mode::Closed { streams: 1 })
    }

    fn text(t: &LoadTarget) -> String {
        String::from_utf8_lossy(&t.request).into_owned()
    }

    #[test]
    fn the_request_is_written_once_with_our_headers() {
        let t = LoadTarget::new(&plan("http://127.0.0.1:8080/api/v1/generate-stream?x=1")).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(t.tls.is_none());
        let body = Plan::example("http://x/", Mode::Closed { streams: 1 }).body;
        let request = text(&t);
        let expected_head = format!(
            "POST /api/v1/generate-stream?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             User-Agent: tokenpipe-loadgen/{}\r\nAccept: text/event-stream\r\n\
             Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        assert_eq!(request, expected_head + &String::from_utf8_lossy(&body));
    }

    #[test]
    fn headers_given_replace_ours_and_keep_alive_drops_close() {
        let p = Plan {
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("Authorization".into(), "Bearer k".into()),
                ("Content-Length".into(), "999".into()),
            ],
            keep_alive: true,
            method: "GET".into(),
            body: Vec::new(),
            ..plan("http://localhost/")
        };
        let request = text(&LoadTarget::new(&p).unwrap());
        assert!(
            request.starts_with("GET / HTTP/1.1\r\nHost: localhost\r\n"),
            "{request}"
        );
        assert!(request.contains("content-type: text/plain\r\n"));
        assert!(!request.contains("application/json"));
        assert!(request.contains("Authorization: Bearer k\r\n"));
        assert!(!request.contains("Connection"), "{request}");
        assert!(
            !request.contains("Content-Length"),
            "a GET without a body: {request}"
        );
    }

    #[test]
    fn https_needs_a_name_and_takes_a_ca_file() {
        let t = LoadTarget::new(&plan("https://127.0.0.1:8443/x")).unwrap();
        let (_, name) = t.tls.expect("TLS");
        assert_eq!(name.to_str(), "127.0.0.1");
        assert!(
            text(&LoadTarget::new(&plan("https://localhost/x")).unwrap())
                .contains("Host: localhost\r\n")
        );
        let missing = Plan {
            ca: Some("/nonexistent/ca.pem".into()),
            ..plan("https://localhost/x")
        };
        assert!(
            LoadTarget::new(&missing)
                .unwrap_err()
                .contains("/nonexistent/ca.pem")
        );
        let ca_for_http = Plan {
            ca: Some("/ca.pem".into()),
            ..plan("http://localhost/x")
        };
        assert!(LoadTarget::new(&ca_for_http).unwrap_err().contains("--ca"));
    }

    #[test]
    fn of_several_addresses_the_one_that_accepts_is_used() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(pick(&[closed, open]), Some(open));
        assert_eq!(pick(&[closed]), Some(closed), "one address: no probe");
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn bad_urls_are_named() {
        for (url, why) in [
            ("ftp://localhost/", "not http or https"),
            ("not a url", "--url not a url"),
            ("http://[::1/", "--url"),
        ] {
            let e = LoadTarget::new(&plan(url)).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        let t = LoadTarget::new(&plan("http://[::1]:9/x")).unwrap();
        assert!(text(&t).contains("Host: [::1]:9\r\n"));
    }
}
