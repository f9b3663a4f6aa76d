//! axum-reqwest-relay: tokenpipe's simple route the way most Rust developers would write it.
//!
//! An axum router with one handler: it takes the body as `Bytes`, translates it into the OpenAI
//! streamed chat request tokenpipe sends (`../../shared/generate.rs`), posts it with a shared
//! `reqwest::Client` (which keeps a pool of keep-alive connections to the upstream), and returns
//! `Body::from_stream(response.bytes_stream())`: each piece reqwest reads from the upstream becomes one
//! chunk to the client, with no buffering of the whole answer. Everything else is axum's and hyper's
//! defaults: their 404 and 405 (with `Allow`), their plain-text refusal of a body axum cannot read, a
//! `Date` header on every response, one accept loop (`axum::serve`).
//!
//! Compared with the tokio-hyper baseline, this adds the layers a typical service has: axum's router
//! and extractors, a `tower` service per request, and reqwest's client (a hyper client underneath, plus
//! its own request building, redirect policy and stream wrapper). The benchmark shows what they cost.
//!
//! `--workers 1` runs on a `current_thread` runtime; `--workers N` on a multi-thread runtime with N
//! workers. Three settings differ from the defaults, each to match tokenpipe rather than to tune:
//! TCP_NODELAY on both sides (a small SSE event must not wait for the previous one's ACK), at most 64
//! idle upstream connections per worker, closed after 30 s idle (tokenpipe's `--upstream-max-conns` and
//! `--upstream-idle-timeout`), and no proxy from the environment (traffic goes only to `--upstream`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};

#[path = "../../shared/args.rs"]
mod args;
#[path = "../../shared/generate.rs"]
mod generate;

/// What every request's handler shares; cloned per request (a reqwest `Client` is an `Arc` inside).
#[derive(Clone)]
struct AppState {
    client: reqwest::Client,
    chat_url: Arc<str>,
}

const USER_AGENT: &str = concat!("axum-reqwest-relay/", env!("CARGO_PKG_VERSION"));

fn main() {
    let args = args::Args::from_env("axum-reqwest-relay");
    let mut builder = if args.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.workers);
        b
    };
    let runtime = builder.enable_all().build().unwrap_or_else(|e| {
        eprintln!("axum-reqwest-relay: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    runtime.block_on(serve(args));
}

async fn serve(args: args::Args) {
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64 * args.workers)
        .pool_idle_timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap_or_else(|e| exit(&format!("cannot build the HTTP client: {e}")));
    let state = AppState {
        client,
        chat_url: format!("{}/v1/chat/completions", args.upstream).into(),
    };
    let app = Router::new()
        .route("/api/v1/generate-stream", post(generate))
        .route(
            "/healthz",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        )
        .layer(DefaultBodyLimit::max(generate::MAX_BODY_BYTES))
        .with_state(state);

    let listener = listen(args.listen)
        .unwrap_or_else(|e| exit(&format!("cannot listen on {}: {e}", args.listen)));
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => exit(&format!("cannot read the listener's address: {e}")),
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        exit(&format!("server: {e}"));
    }
}

/// The simple route: translate, ask the upstream, hand its byte stream to axum as the response body.
async fn generate(State(state): State<AppState>, body: Bytes) -> Response {
    let upstream_body = match generate::openai_body(&body) {
        Ok(b) => b,
        Err(refusal) => return refused(refusal),
    };
    let sent = state
        .client
        .post(&*state.chat_url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(upstream_body)
        .send()
        .await;
    let upstream = match sent {
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
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, Body::from_stream(upstream.bytes_stream())).into_response()
}

fn refused(refusal: generate::Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let json = [(header::CONTENT_TYPE, "application/json")];
    (status, json, refusal.body).into_response()
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
    eprintln!("axum-reqwest-relay: {message}");
    std::process::exit(1)
}
