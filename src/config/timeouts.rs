//! The deadline options: one per wait (docs/10-deadlines.md). The client's four are shared by the relay
//! and the mock ([`ClientTimeoutArgs`], in `CommonArgs`); the upstream's are the relay's
//! ([`UpstreamTimeoutArgs`]).

use std::time::Duration;

use clap::Args;

use super::duration::{MaybeDuration, parse_optional_duration, parse_positive_duration};
use crate::conn::client::ClientTimeouts;
use crate::relay::deadlines::UpstreamTimeouts;

/// How long a client may take at each step.
#[derive(Args, Debug, Clone)]
pub struct ClientTimeoutArgs {
    /// A client must send a whole request head within this, from its first byte (or from the
    /// connection, for its first request); trickled bytes do not extend it. Then 408 and close.
    #[arg(long, env = "TOKENPIPE_CLIENT_HEAD_TIMEOUT", default_value = "10s", value_name = "DURATION",
          value_parser = parse_positive_duration)]
    pub client_head_timeout: Duration,
    /// A client must send a whole request body within this, from the end of its head. Then 408 and
    /// close.
    #[arg(long, env = "TOKENPIPE_CLIENT_BODY_TIMEOUT", default_value = "60s", value_name = "DURATION",
          value_parser = parse_positive_duration)]
    pub client_body_timeout: Duration,
    /// An idle keep-alive connection is closed after this (longer than the 60 s idle timeout of common
    /// load balancers, so that they close first).
    #[arg(long, env = "TOKENPIPE_KEEPALIVE_TIMEOUT", default_value = "75s", value_name = "DURATION",
          value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,
    /// A client that takes no byte of its response for this long is dropped, and its upstream request
    /// cancelled.
    #[arg(long, env = "TOKENPIPE_CLIENT_WRITE_TIMEOUT", default_value = "60s", value_name = "DURATION",
          value_parser = parse_positive_duration)]
    pub client_write_timeout: Duration,
}

impl ClientTimeoutArgs {
    pub fn timeouts(&self) -> ClientTimeouts {
        ClientTimeouts {
            head: self.client_head_timeout,
            body: self.client_body_timeout,
            keepalive: self.keepalive_timeout,
            write: self.client_write_timeout,
        }
    }
}

/// How long an upstream may take at each step.
#[derive(Args, Debug, Clone)]
pub struct UpstreamTimeoutArgs {
    /// Resolving the upstream's name and connecting to it. Then 504 (or the next address or upstream).
    #[arg(long, env = "TOKENPIPE_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub upstream_connect_timeout: Duration,
    /// The TLS handshake with an https upstream. Then 504.
    #[arg(long, env = "TOKENPIPE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: Duration,
    /// The upstream's response head, from the start of the request. A non-streamed answer's head comes
    /// only when the whole generation is done, hence the long default (the providers' SDKs wait 600 s).
    /// Then 504.
    #[arg(long, env = "TOKENPIPE_UPSTREAM_HEAD_TIMEOUT", default_value = "600s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub upstream_head_timeout: Duration,
    /// The first real event of a stream (comments and pings do not count), from the response head:
    /// reasoning models may think for minutes. Then the stream fails with an error event.
    #[arg(long, env = "TOKENPIPE_FIRST_TOKEN_TIMEOUT", default_value = "300s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub first_token_timeout: Duration,
    /// Silence between two reads of a response body (SSE comments and pings count as activity). Then
    /// the stream fails with an error event.
    #[arg(long, env = "TOKENPIPE_STREAM_IDLE_TIMEOUT", default_value = "120s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub stream_idle_timeout: Duration,
    /// The whole exchange, from the request to the last byte (0: no limit, the default, because long
    /// answers must not be cut).
    #[arg(long, env = "TOKENPIPE_STREAM_TIMEOUT", default_value = "0", value_name = "DURATION",
          value_parser = parse_optional_duration)]
    pub stream_timeout: MaybeDuration,
    /// While an event stream's upstream is silent, send the client a `: keep-alive` comment this often,
    /// between events only, so that proxies with idle timeouts do not cut it (0: never).
    #[arg(long, env = "TOKENPIPE_SSE_KEEPALIVE", default_value = "15s", value_name = "DURATION",
          value_parser = parse_optional_duration)]
    pub sse_keepalive: MaybeDuration,
}

impl UpstreamTimeoutArgs {
    pub fn timeouts(&self) -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: self.upstream_connect_timeout,
            handshake: self.tls_handshake_timeout,
            head: self.upstream_head_timeout,
            first_token: self.first_token_timeout,
            idle: self.stream_idle_timeout,
            total: self.stream_timeout.0,
            sse_keepalive: self.sse_keepalive.0,
        }
    }
}
