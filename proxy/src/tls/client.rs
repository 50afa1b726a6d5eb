//! TLS to upstream endpoints: server verification against the system's roots or a CA file,
//! SNI, and an optional client certificate (mutual TLS).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Certified, TlsError, certified_key, provider, read_certs};
use crate::config::ServiceConfig;

/// How one service's endpoints are reached over TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Hash of the settings and of every file read, so that a pool is kept across a reload
    /// exactly when nothing about its TLS changed.
    fingerprint: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Builds the TLS settings of `service`, or `None` when it speaks plain TCP. `h2` selects
    /// the protocol offered by ALPN (`h2`, else `http/1.1`).
    pub fn load(service: &ServiceConfig, h2: bool) -> Result<Option<Arc<Self>>, TlsError> {
        let Some(tls) = &service.tls else { return Ok(None) };
        let owner = format!("service `{}`", service.name);
        // What the connector is built from, so that a reload can tell whether it changed.
        let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
        fingerprint.update(format!("{tls:?}{h2}").as_bytes());

        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(file) => {
                for cert in read_certs(&owner, file)? {
                    fingerprint.update(&cert);
                    roots.add(cert).map_err(|e| TlsError::new(&owner, file, format!("not a CA certificate: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    let reason = "no system CA certificates found: set tls.ca_file".to_owned();
                    return Err(TlsError { owner, file: "(system roots)".into(), reason });
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(&owner, std::path::Path::new("(tls)"), e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                // Checked as a pair first, so a key that is not the certificate's is named.
                let Certified { key: certified, private, .. } = certified_key(&owner, cert, key)?;
                certified.cert.iter().for_each(|c| fingerprint.update(c));
                fingerprint.update(private.secret_der());
                builder
                    .with_client_auth_cert(certified.cert, private)
                    .map_err(|e| TlsError::new(&owner, cert, e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        let server_name = match &tls.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| TlsError {
                owner: owner.clone(),
                file: "(tls.server_name)".into(),
                reason: format!("`{name}` is not a DNS name or IP address: {e}"),
            })?),
            None => None,
        };
        Ok(Some(Arc::new(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            fingerprint: fingerprint.digest(),
        })))
    }

    /// Runs the handshake on `tcp`, a connection to `addr`, verifying the endpoint's
    /// certificate for the configured name (or for `addr`'s IP address).
    pub async fn connect(&self, addr: SocketAddr, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.connector.connect(name, tcp).await
    }
}
