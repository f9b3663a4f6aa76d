//! What a relay worker is told: [`RelaySettings`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::auth::ClientKeys;
use super::deadlines::UpstreamTimeouts;
use super::routes::Router;
use super::{UpstreamTarget, dns, ratelimit, retry};
use crate::conn::client::ClientTimeouts;
use crate::http::request::Limits;

/// What a relay worker is told besides where to relay.
#[derive(Clone)]
pub struct RelaySettings {
    pub limits: Limits,
    /// Most bytes held per stream that its client has not read (`--stream-buffer-bytes`).
    pub stream_buffer: usize,
    /// Most idle keep-alive upstream connections kept (`--upstream-max-conns`).
    pub max_idle: usize,
    /// How long an idle upstream connection is kept (`--upstream-idle-timeout`).
    pub idle_timeout: Duration,
    /// Terminate TLS on accepted connections (`--tls-cert`, `--tls-key`).
    pub inbound_tls: Option<Arc<rustls::ServerConfig>>,
    /// How long names stay resolved (`--dns-ttl`).
    pub dns: dns::CacheConfig,
    /// The upstreams, each with this worker's TLS client configuration for it (`https` only; one per
    /// worker, so that each has its own session cache: `conn::tls::client_config`).
    pub upstreams: Vec<(Arc<UpstreamTarget>, Option<Arc<rustls::ClientConfig>>)>,
    /// Which upstream serves which path.
    pub router: Router,
    /// How long a client may take at each step.
    pub client: ClientTimeouts,
    /// How long an upstream may take at each step.
    pub timeouts: UpstreamTimeouts,
    /// How failed requests are tried again.
    pub retry: retry::RetryPolicy,
    /// Every client's token bucket, shared by the workers (`None`: no limit).
    pub rate_limiter: Option<Arc<ratelimit::RateLimiter>>,
    /// The keys clients must present (none: every client is served).
    pub client_keys: Arc<ClientKeys>,
    /// Clients this worker serves at once; more get a fast 503 (`server::budget`).
    pub max_clients: usize,
    /// Set for the whole process when a drain starts (`server::supervisor::Drainer`).
    pub draining: Arc<AtomicBool>,
}
