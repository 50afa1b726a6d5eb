//! `[[listeners]]`: where proxied traffic is accepted, with its timeouts and limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::defaults::default_true;
use super::tls::ListenerTlsConfig;

/// A downstream listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name; routes may restrict themselves to named listeners.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Time allowed to receive a complete HTTP/1 request head, counted from when the
    /// connection is ready for it (so it also bounds how long a kept-alive HTTP/1
    /// connection waits for its next request). Defends against slowloris.
    #[serde(default = "ListenerConfig::default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes either way for this long is closed.
    #[serde(default = "ListenerConfig::default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed at accept.
    #[serde(default = "ListenerConfig::default_max_connections")]
    pub max_connections: usize,
    /// Largest request head accepted, in KiB (request line and header lines over HTTP/1.1, the
    /// decoded header list over HTTP/2); a larger one gets 431. It also bounds the memory a
    /// slow or idle connection holds for an unfinished head.
    #[serde(default = "ListenerConfig::default_max_request_headers_kib")]
    pub max_request_headers_kib: usize,
    /// Most header lines a request may carry; more get 431.
    #[serde(default = "ListenerConfig::default_max_request_headers")]
    pub max_request_headers: usize,
    /// Whether requests go upstream with `X-Forwarded-For` (the client appended),
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`. Off, a client's own are passed on as sent
    /// (as nginx and HAProxy do unless told otherwise).
    #[serde(default = "default_true")]
    pub forwarded_headers: bool,
    /// TLS termination; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

impl ListenerConfig {
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_connections() -> usize {
        10_000
    }
    fn default_max_request_headers_kib() -> usize {
        64
    }
    fn default_max_request_headers() -> usize {
        100
    }

    /// [`ListenerConfig::max_request_headers_kib`] in bytes.
    pub fn max_request_head_bytes(&self) -> usize {
        self.max_request_headers_kib * 1024
    }
}
