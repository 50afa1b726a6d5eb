//! TLS settings: `[listeners.tls]` (termination) and `[services.tls]` (upstream TLS).

use serde::Deserialize;

/// TLS termination on a listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificates with their keys; the client's SNI picks one, and the first one answers
    /// clients that send no name or a name no certificate covers.
    pub certificates: Vec<CertificateConfig>,
    /// Oldest protocol version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Protocols offered by ALPN, in preference order.
    #[serde(default = "ListenerTlsConfig::default_alpn")]
    pub alpn: Vec<String>,
}

impl ListenerTlsConfig {
    fn default_alpn() -> Vec<String> {
        vec!["h2".to_owned(), "http/1.1".to_owned()]
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS from the proxy to a service's endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates that sign the endpoints' certificates; the system's
    /// roots when absent.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name sent by SNI and verified in the endpoint's certificate; the endpoint's IP address
    /// when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate for mutual TLS (needs `client_key`).
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// Private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}
