//! TLS with rustls: certificates for listeners ([`server`]) and connectors for upstreams
//! ([`client`]), both built from PEM files when a configuration loads, so a reload that
//! brings a renewed certificate applies it to new connections and a bad file is refused
//! before anything changes.

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS settings of a whole configuration, loaded from its files.
#[derive(Debug, Default)]
pub struct TlsSet {
    /// Termination settings of the TLS listeners, by listener name.
    pub listeners: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Connection settings of the services that reach their endpoints over TLS, by name.
    pub services: HashMap<String, Arc<client::UpstreamTls>>,
}

impl TlsSet {
    /// Loads every certificate, key and CA file `config` names; fails on the first that
    /// cannot be used.
    pub fn load(config: &crate::config::Config) -> Result<Self, TlsError> {
        let mut set = Self::default();
        for listener in &config.listeners {
            if let Some(tls) = server::load(listener)? {
                set.listeners.insert(listener.name.clone(), tls);
            }
        }
        for service in &config.services {
            let h2 = service.protocol == crate::config::UpstreamProtocol::H2;
            if let Some(tls) = client::UpstreamTls::load(service, h2)? {
                set.services.insert(service.name.clone(), tls);
            }
        }
        Ok(set)
    }
}

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{owner}: {}: {reason}", file.display())]
pub struct TlsError {
    /// What uses the file: "listener `https`" or "service `api`".
    pub owner: String,
    /// The file.
    pub file: PathBuf,
    /// Why it cannot be used.
    pub reason: String,
}

impl TlsError {
    fn new(owner: &str, file: &Path, reason: impl Into<String>) -> Self {
        Self { owner: owner.to_owned(), file: file.to_path_buf(), reason: reason.into() }
    }
}

/// The crypto provider every TLS configuration uses (ring).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Reads a PEM certificate chain, leaf first, refusing an empty file and a leaf that is
/// expired or not yet valid.
fn read_chain(owner: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = read_certs(owner, file)?;
    let leaf = certs.first().ok_or_else(|| TlsError::new(owner, file, "no certificate in the file"))?;
    check_validity(leaf).map_err(|reason| TlsError::new(owner, file, reason))?;
    Ok(certs)
}

/// Reads every certificate of a PEM file (a chain or a CA bundle).
fn read_certs(owner: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(file).map_err(|e| TlsError::new(owner, file, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(owner, file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(owner, file, "no certificate in the file"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(owner: &str, file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(file).map_err(|e| TlsError::new(owner, file, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::new(owner, file, format!("no usable private key: {e}")))
}

/// A certificate chain with its signing key, its leaf, and the private key as read.
struct Certified {
    key: rustls::sign::CertifiedKey,
    leaf: CertificateDer<'static>,
    private: PrivateKeyDer<'static>,
}

/// Builds a signing key from the chain in `cert_file` and the key in `key_file` (each read
/// once), refusing a key that is not the leaf's.
fn certified_key(owner: &str, cert_file: &Path, key_file: &Path) -> Result<Certified, TlsError> {
    let chain = read_chain(owner, cert_file)?;
    let private = read_key(owner, key_file)?;
    let leaf = chain[0].clone();
    let key = rustls::sign::CertifiedKey::from_der(chain, private.clone_key(), &provider()).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("the key in {} does not match this certificate", key_file.display())
            }
            other => format!("cannot use the key in {}: {other}", key_file.display()),
        };
        TlsError::new(owner, cert_file, reason)
    })?;
    Ok(Certified { key, leaf, private })
}

/// Refuses a certificate outside its validity period, naming the date.
fn check_validity(der: &CertificateDer<'_>) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a valid certificate: {e}"))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(format!("certificate expired on {}", validity.not_after));
    }
    if validity.not_before > now {
        return Err(format!("certificate is not valid until {}", validity.not_before));
    }
    Ok(())
}

/// The DNS names a certificate covers: its subject alternative names, or its common name
/// when it has none.
fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let from_san: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !from_san.is_empty() {
        return from_san;
    }
    cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect()
}
