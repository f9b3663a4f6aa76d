//! Client authentication: who may use the relay, and who they are.
//!
//! # Closed by default
//!
//! Every request the relay forwards is paid for with the operator's provider key. A relay anyone can reach
//! is a free API key for anyone. So when client keys are configured (`--client-key`, `--client-keys-file`),
//! every request must carry one, and a relay that would listen beyond loopback without them refuses to
//! start ([`check_exposure`]) unless told `--allow-unauthenticated` (for a front end that authenticates).
//!
//! # Where a client puts its key
//!
//! Where its SDK sends its API key, so that SDK users only change the key and the base URL
//! ([`presented_keys`]):
//!
//! | route | accepted |
//! | --- | --- |
//! | every route | `Authorization: Bearer KEY` (the OpenAI SDKs, curl) |
//! | Anthropic's pass-through paths | also `x-api-key: KEY` (the Anthropic SDKs) |
//! | Gemini's pass-through paths | also `x-goog-api-key: KEY` (google-genai), or a `key=KEY` query parameter |
//!
//! `GET`/`HEAD` on `/healthz` and `/readyz` need no key: a load balancer's probe has none. Every other
//! request without a valid key is a `401` ([`Refusal`]), before routing, so that a client without a key
//! learns nothing, not even which paths exist. A request that carries several credentials passes only if
//! all are the same valid key: two different keys would make two identities.
//!
//! # What never leaks
//!
//! Keys are compared in constant time ([`ClientKeys::find`]); a wrong key is "invalid client key", never
//! echoed; `ClientKey` and `ClientKeys` print no key in `Debug`; and no credential a client sends ever
//! reaches the upstream (`passthrough::NOT_FORWARDED` and its `key=` filter drop every place accepted here).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::http::request::Request;
use crate::relay::providers::Provider;

mod keys;

pub use keys::{ClientKey, ClientKeys, MIN_KEY_LEN, parse_key_file, read_key_file};

/// Who a request comes from, for the stages after authentication (per-client limits, logs): the name of
/// the key it presented (a key without a name is known as `#N`, its position), or, when it needs no key
/// (a relay without keys, a health probe), the client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Key(Arc<str>),
    Ip(IpAddr),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Key(name) => write!(f, "key {name}"),
            Identity::Ip(ip) => write!(f, "address {ip}"),
        }
    }
}

/// Why a request is refused: a `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential where this route takes one.
    Missing,
    /// A credential that is no configured key (or two different ones).
    Invalid,
}

impl Refusal {
    pub const STATUS: u16 = 401;
    pub const CODE: &'static str = "unauthorized";
    /// The challenge (RFC 9110 §11.6.1): a 401 must name the scheme that would do.
    pub const CHALLENGE: (&'static str, &'static str) = ("WWW-Authenticate", "Bearer");

    /// What the client is told: where a key goes on this route; never anything of a key it sent.
    pub fn message(self, provider: Option<Provider>) -> String {
        match self {
            Refusal::Invalid => "invalid client key".into(),
            Refusal::Missing => {
                let also = match provider {
                    Some(Provider::Anthropic) => " (or x-api-key: KEY)",
                    Some(Provider::Gemini) => " (or x-goog-api-key: KEY)",
                    Some(Provider::OpenAi) | None => "",
                };
                format!("this relay needs a client key: send Authorization: Bearer KEY{also}")
            }
        }
    }
}

/// Requests that need no key: health and readiness probes, which a load balancer sends without one, and
/// the metrics, which a Prometheus scraper reads without one (they hold no secret and no prompt).
pub fn needs_no_key(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Who `req` (from `peer`) is, or why it is refused. `provider` is the provider whose pass-through path
/// it asks for, if any (it decides which headers may carry the key).
pub fn authenticate(
    keys: &ClientKeys,
    req: &Request,
    provider: Option<Provider>,
    peer: IpAddr,
) -> Result<Identity, Refusal> {
    if keys.is_empty() || needs_no_key(&req.method, &req.path) {
        return Ok(Identity::Ip(peer));
    }
    let mut who: Option<&Arc<str>> = None;
    for presented in presented_keys(req, provider) {
        match (keys.find(&presented), who) {
            (Some(name), None) => who = Some(name),
            (Some(name), Some(first)) if Arc::ptr_eq(name, first) => {}
            _ => return Err(Refusal::Invalid),
        }
    }
    who.map(|name| Identity::Key(name.clone()))
        .ok_or(Refusal::Missing)
}

/// Every credential `req` carries where this route accepts one (the table in the module docs), in order:
/// `Authorization: Bearer` fields, then the provider's own header, then (Gemini) `key=` parameters. An
/// `Authorization` field with another scheme (`Basic`) is not ours and is ignored.
pub fn presented_keys(req: &Request, provider: Option<Provider>) -> Vec<Vec<u8>> {
    let fields = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_ascii())
    };
    let mut keys: Vec<Vec<u8>> = fields("authorization")
        .filter_map(bearer_token)
        .map(<[u8]>::to_vec)
        .collect();
    let own_header = match provider {
        Some(Provider::Anthropic) => Some("x-api-key"),
        Some(Provider::Gemini) => Some("x-goog-api-key"),
        Some(Provider::OpenAi) | None => None,
    };
    if let Some(name) = own_header {
        keys.extend(fields(name).map(<[u8]>::to_vec));
    }
    if provider == Some(Provider::Gemini)
        && let Some(query) = &req.query
    {
        // Decoded as a form (`%2B`, `+`): the way a client encodes a key in a URL. Only a parameter named
        // exactly `key` counts, one of those the pass-through drops (it drops any spelling of it).
        let params = url::form_urlencoded::parse(query.as_bytes());
        keys.extend(
            params
                .filter(|(name, _)| name == "key")
                .map(|(_, value)| value.into_owned().into_bytes()),
        );
    }
    keys
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(6)?;
    let token = token.strip_prefix(b" ")?.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Refuses to serve beyond loopback (127.0.0.0/8, ::1) without client keys, unless `allow_unauthenticated`:
/// the check made at start, before any socket is opened.
pub fn check_exposure(
    listen: SocketAddr,
    keyed: bool,
    allow_unauthenticated: bool,
) -> Result<(), String> {
    // `to_canonical`: an IPv4-mapped address (::ffff:127.0.0.1) is the IPv4 address it maps.
    if keyed || allow_unauthenticated || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {listen} without client keys: anyone who can reach it could spend the \
         upstream API keys. Give --client-key or --client-keys-file (TOKENPIPE_CLIENT_KEYS, \
         TOKENPIPE_CLIENT_KEYS_FILE, or client_keys_file in --config), listen on loopback \
         (--listen 127.0.0.1:PORT), or pass --allow-unauthenticated if something in front of the relay \
         authenticates clients"
    ))
}

#[cfg(test)]
mod tests;
