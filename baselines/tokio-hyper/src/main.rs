//! tokio-hyper-relay: tokenpipe's simple route on tokio, written as a careful hyper user would.
//!
//! The comparison the benchmark makes: the same relay as tokenpipe, built from the standard async
//! parts instead of a hand-written reactor. A hyper 1.x HTTP/1.1 server accepts clients; for
//! `POST /api/v1/generate-stream` it reads the JSON body, translates it into the OpenAI streamed chat
//! request tokenpipe sends (`../../shared/generate.rs`), sends that with hyper-util's pooled "legacy"
//! client (keep-alive connections to the upstream, reused across requests), and answers with the
//! upstream's body *itself* as the response body: hyper hands each frame it reads from the upstream to
//! the client connection as it comes, framed as one chunk, with no buffering in between.
//!
//! `--workers 1` runs everything on a `current_thread` runtime (one thread, as tokenpipe's
//! `--workers 1`); `--workers N` on a multi-thread runtime with N workers, which share one accept loop
//! and steal each other's tasks, where tokenpipe gives each worker its own listener.
//!
//! Choices made to match tokenpipe where hyper lets us: TCP_NODELAY on both sides (tokenpipe sets it on
//! every socket; without it a small SSE event can wait for the previous one's ACK), no `Date` header
//! (tokenpipe sends none), a 10 s limit on a request head (tokenpipe's `--client-head-timeout`), at most
//! 64 idle upstream connections per worker, closed after 30 s idle (tokenpipe's `--upstream-max-conns`
//! and `--upstream-idle-timeout`). What it does not do, unlike tokenpipe: retries, deadlines on the
//! stream, backpressure limits of its own (hyper's buffers and the sockets' are the only ones), an SSE
//! error event when the upstream breaks mid-stream (hyper ends the chunked body without its last chunk,
//! so the client still sees a truncated stream).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};

#[path = "../../shared/args.rs"]
mod args;
#[path = "../../shared/generate.rs"]
mod generate;

/// A response body: the upstream's own body, streamed through, or a small one of ours (errors, health).
type Body = Either<Incoming, Full<Bytes>>;

/// What every connection's service shares: the pooled client and where it sends the simple route.
struct Relay {
    client: Client<HttpConnector, Full<Bytes>>,
    chat_url: Uri,
}

const USER_AGENT: &str = concat!("tokio-hyper-relay/", env!("CARGO_PKG_VERSION"));

fn main() {
    let args = args::Args::from_env("tokio-hyper-relay");
    let mut builder = if args.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.workers);
        b
    };
    let runtime = builder.enable_all().build().unwrap_or_else(|e| {
        eprintln!("tokio-hyper-relay: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    runtime.block_on(serve(args));
}

async fn serve(args: args::Args) {
    let chat_url: Uri = match format!("{}/v1/chat/completions", args.upstream).parse() {
        Ok(uri) => uri,
        Err(e) => exit(&format!("--upstream {}: {e}", args.upstream)),
    };
    let listener = match listen(args.listen) {
        Ok(l) => l,
        Err(e) => exit(&format!("cannot listen on {}: {e}", args.listen)),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64 * args.workers)
        .pool_idle_timeout(Duration::from_secs(30))
        // The pool needs a timer to close idle connections on time rather than at their next checkout.
        .pool_timer(TokioTimer::new())
        .build(connector);
    let relay = Arc::new(Relay { client, chat_url });
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => exit(&format!("cannot read the listener's address: {e}")),
    }

    let mut server = http1::Builder::new();
    server
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .auto_date_header(false);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin on the error.
                eprintln!("tokio-hyper-relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let relay = relay.clone();
        let connection = server.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(relay.handle(req).await) }
            }),
        );
        // One task per client connection; its stream is polled inside it, so a stream costs one task.
        tokio::spawn(async move {
            // A client that leaves or sends garbage ends its connection; nothing to do but drop it.
            let _ = connection.await;
        });
    }
}

impl Relay {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let generate = req.uri().path() == "/api/v1/generate-stream";
        match *req.method() {
            Method::POST if generate => self.generate(req).await,
            Method::GET | Method::HEAD if req.uri().path() == "/healthz" => {
                small(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
            }
            _ if generate => {
                let refusal = generate::Refusal::new(405, "method_not_allowed", "use POST");
                let mut response = refused(refusal);
                let allow = HeaderValue::from_static("POST");
                response.headers_mut().insert(header::ALLOW, allow);
                response
            }
            _ => refused(generate::Refusal::new(404, "not_found", "no such route")),
        }
    }

    /// The simple route: read the body, ask the upstream, stream its answer through.
    async fn generate(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match Limited::new(req.into_body(), generate::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                let message = "request body too large";
                return refused(generate::Refusal::new(413, "body_too_large", message));
            }
            Err(e) => {
                let message = format!("reading the request body: {e}");
                return refused(generate::Refusal::new(400, "bad_request", &message));
            }
        };
        let upstream_body = match generate::openai_body(&body) {
            Ok(b) => b,
            Err(refusal) => return refused(refusal),
        };

        let mut request = Request::new(Full::new(Bytes::from(upstream_body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.chat_url.clone();
        let headers = request.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let json = HeaderValue::from_static("application/json");
        headers.insert(header::CONTENT_TYPE, json);
        let event_stream = HeaderValue::from_static("text/event-stream");
        headers.insert(header::ACCEPT, event_stream);
        // Host comes from the URI and Content-Length from the full body: hyper writes both.

        let upstream = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => {
                let message = format!("upstream request failed: {e}");
                return refused(generate::Refusal::new(502, "upstream_failed", &message));
            }
        };
        if !upstream.status().is_success() {
            let message = format!("upstream answered {}", upstream.status());
            return refused(generate::Refusal::new(502, "upstream_status", &message));
        }

        // tokenpipe's stream head; no Content-Length, so hyper frames the body as chunked.
        let mut response = Response::new(Either::Left(upstream.into_body()));
        let headers = response.headers_mut();
        let event_stream = HeaderValue::from_static("text/event-stream");
        headers.insert(header::CONTENT_TYPE, event_stream);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// A small JSON answer of ours.
fn small(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}

fn refused(refusal: generate::Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    small(status, refusal.body)
}

/// A listener with the backlog tokenpipe has by default (the kernel's `somaxconn`, which caps what we
/// ask) rather than `TcpListener::bind`'s 128: a burst of thousands of connections must not see SYNs
/// dropped and retried a second later, which would show as this relay's latency.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65535)
}

fn exit(message: &str) -> ! {
    eprintln!("tokio-hyper-relay: {message}");
    std::process::exit(1)
}
