//! Making a request again for a fallback upstream.
//!
//! When an upstream fails before the first byte reached the client, the exchange may move to the
//! upstream its configuration names as fallback (say, OpenAI, then a local vLLM server). The request it
//! sent was made for the first upstream (its host, its key, its provider's body), so it is made again from
//! what it was made from ([`Rebuild`], kept in the exchange only while a move is possible).

use std::time::Instant;

use super::api::{self, ApiError, GenerateRequest};
use super::auth::Identity;
use super::exchange::{Exchange, Kind};
use super::routes::{Route, Target};
use super::usage::Dialect;
use super::{UpstreamTarget, passthrough, providers};
use crate::conn::client::StreamFraming;
use crate::http::headers::value;
use crate::http::request::Request;

/// The exchange for client request `req`, routed to upstream `t` as `to` says: its upstream request made
/// (a generation from the simple route's body, or the client's own request passed through), and, if `t`
/// has a fallback, what it was made from.
pub(super) fn exchange_for(
    t: &UpstreamTarget,
    req: &Request,
    to: &Target<'_>,
    (framing, now): (StreamFraming, Instant),
    who: Identity,
) -> Result<Exchange, ApiError> {
    let (kind, request) = match to.route {
        Route::PassThrough => (
            Kind::PassThrough {
                head: req.method == "HEAD",
            },
            passthrough::build_request(t.provider, &t.origin, t.key.as_ref(), req, to.path),
        ),
        _ => (
            Kind::Generate,
            api::parse_generate(&req.body).and_then(|g| {
                let (key, model) = (t.key.as_ref(), &t.default_model);
                providers::build_request(t.provider, &t.origin, key, &g, model)
                    .map(|made| with_request_id(made, req))
            }),
        ),
    };
    let mut x = Exchange::new(kind, to.upstream, request?, framing, now, who);
    x.dialect = Dialect::of(t.provider, to.path);
    x.replayable = matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS")
        || value(&req.headers, "idempotency-key").is_some();
    if t.fallback.is_some() {
        x.rebuild = Rebuild::from(kind, req, to.path);
    }
    Ok(x)
}

/// `request` (an upstream request made by the relay) with the client request's `X-Request-Id`, after its
/// request line. The id is a plain token (`conn::client::record`), so it cannot break the head.
fn with_request_id(mut request: Vec<u8>, req: &Request) -> Vec<u8> {
    let Some(id) = value(&req.headers, "x-request-id") else {
        return request;
    };
    let Some(line_end) = request.windows(2).position(|w| w == b"\r\n") else {
        return request;
    };
    let field = format!("X-Request-Id: {id}\r\n");
    request.splice(line_end + 2..line_end + 2, field.bytes());
    request
}

/// What a request was made from: enough to make it again for another upstream.
#[derive(Debug)]
pub enum Rebuild {
    /// The simple route's parsed body (translated for whichever provider serves it), and the client's
    /// request with its id.
    Generate(GenerateRequest, Box<Request>),
    /// A pass-through request and the path asked for (sent unchanged, to an upstream of the same
    /// provider only).
    PassThrough { req: Request, path: String },
}

impl Rebuild {
    /// What `req` (routed as `kind`, to `path`) was made from.
    pub fn from(kind: Kind, req: &Request, path: &str) -> Option<Box<Rebuild>> {
        match kind {
            Kind::Generate => api::parse_generate(&req.body)
                .ok()
                .map(|g| Box::new(Rebuild::Generate(g, Box::new(without_body(req))))),
            Kind::PassThrough { .. } => Some(Box::new(Rebuild::PassThrough {
                req: req.clone(),
                path: path.to_string(),
            })),
        }
    }

    /// The request made again for upstream `to` after `from` failed. The simple route's body is
    /// translated for `to`'s provider and asks for `to`'s default model (a model named for one provider
    /// means nothing to another, nor to a local server). A pass-through request goes only to an upstream
    /// of the same provider: its body is that provider's API.
    pub fn remake(&self, from: &UpstreamTarget, to: &UpstreamTarget) -> Option<Vec<u8>> {
        match self {
            Rebuild::Generate(g, req) => {
                let mut g = g.clone();
                g.model = None;
                let key = to.key.as_ref();
                providers::build_request(to.provider, &to.origin, key, &g, &to.default_model)
                    .ok()
                    .map(|made| with_request_id(made, req))
            }
            Rebuild::PassThrough { req, path } if from.provider == to.provider => {
                passthrough::build_request(to.provider, &to.origin, to.key.as_ref(), req, path).ok()
            }
            Rebuild::PassThrough { .. } => None,
        }
    }
}

/// `req` without its body (kept in `Generate` already, parsed).
fn without_body(req: &Request) -> Request {
    Request {
        body: Vec::new(),
        ..req.clone()
    }
}

/// Moves exchange `x` to its upstream's fallback with the request made again for it. Returns the names
/// of the upstream it leaves and the one it goes to; `None` when it cannot go (no fallback, or a
/// pass-through request to an upstream of another provider).
pub(super) fn fall_back(
    upstreams: &super::connector::Connector,
    x: &mut Exchange,
) -> Option<(String, String)> {
    let from = upstreams.target(x.via)?;
    let next = from.fallback?;
    let to = upstreams.target(next)?;
    let request = x.rebuild.as_deref()?.remake(from, to)?;
    let names = (from.name.clone(), to.name.clone());
    x.move_to(next, request);
    // The simple route's request was made for the fallback's provider, whose events the stream will carry
    // (a pass-through goes only to the same provider, on the same path).
    if x.kind == Kind::Generate {
        x.dialect = Dialect::of(to.provider, "");
    }
    Some(names)
}
