//! The command line every Rust baseline takes: `--listen ADDR --upstream URL [--workers N]`.
//!
//! Parsed by hand rather than with clap so that each baseline's dependencies are only what its design
//! needs (the floor's are `mio` alone), and so that the flags mean the same thing in every peer of the
//! benchmark. Included with `#[path]` by each baseline; a bad command line exits with status 2 and a
//! message, as clap would.

use std::net::SocketAddr;
use std::process::exit;

/// What the benchmark passes to a relay.
pub struct Args {
    /// Where to listen, e.g. `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// The upstream's base URL without a trailing slash, e.g. `http://127.0.0.1:9090`.
    pub upstream: String,
    /// Worker threads: 1 is a single-threaded event loop, as tokenpipe's `--workers 1`.
    pub workers: usize,
}

impl Args {
    /// The arguments of this process, or exit with a usage message.
    pub fn from_env(program: &str) -> Args {
        let usage = format!(
            "usage: {program} --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT [--workers N]"
        );
        let fail = |message: String| -> ! {
            eprintln!("{program}: {message}\n{usage}");
            exit(2)
        };
        let (mut listen, mut upstream, mut workers) = (None, None, 1);
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{usage}");
                exit(0);
            }
            let Some(value) = args.next() else {
                fail(format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--listen" => match value.parse() {
                    Ok(addr) => listen = Some(addr),
                    Err(e) => fail(format!("--listen {value}: {e}")),
                },
                "--upstream" => upstream = Some(value.trim_end_matches('/').to_string()),
                "--workers" => match value.parse() {
                    Ok(n) if n >= 1 => workers = n,
                    _ => fail(format!("--workers {value}: a whole number, at least 1")),
                },
                _ => fail(format!("unknown option {flag}")),
            }
        }
        let Some(listen) = listen else {
            fail("--listen is required".into())
        };
        let Some(upstream) = upstream else {
            fail("--upstream is required".into())
        };
        if !upstream.starts_with("http://") {
            fail(format!("--upstream {upstream}: only http:// upstreams"));
        }
        Args {
            listen,
            upstream,
            workers,
        }
    }
}
