//! TLS termination: a listener's certificates, chosen by SNI.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};

use super::{Certified, TlsError, certified_key, dns_names, provider};
use crate::config::{ListenerConfig, TlsVersion};

/// Chooses a listener's certificate from the client's SNI: an exact name first, then a
/// wildcard one label up, then the first certificate configured.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else { return self.default.clone() };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent.and_then(|p| self.wildcard.get(p)).unwrap_or(&self.default).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Builds the TLS configuration of `listener` from its certificate and key files, or `None`
/// when it is plain TCP. A file that cannot be read, an expired certificate or a key that
/// does not match its certificate is an error naming the listener and the file.
pub fn load(listener: &ListenerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let Some(tls) = &listener.tls else { return Ok(None) };
    let owner = format!("listener `{}`", listener.name);
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in &tls.certificates {
        let Certified { key, leaf, .. } = certified_key(&owner, &c.cert, &c.key)?;
        let key = Arc::new(key);
        for name in dns_names(&leaf) {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_owned()).or_insert_with(|| key.clone()),
                None => exact.entry(name).or_insert_with(|| key.clone()),
            };
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or_else(|| TlsError::new(&owner, std::path::Path::new(""), "no certificate"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&TLS13, &TLS12],
        TlsVersion::Tls13 => &[&TLS13],
    };
    let first_file = &tls.certificates[0].cert;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(&owner, first_file, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { exact, wildcard, default }));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("cert");
        let der = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
        Arc::new(CertifiedKey::from_der(vec![cert.cert.der().clone()], der, &provider()).expect("certified"))
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let (default, exact, wild) = (key(), key(), key());
        let resolver = SniResolver {
            exact: HashMap::from([("api.example.com".to_owned(), exact.clone())]),
            wildcard: HashMap::from([("example.com".to_owned(), wild.clone())]),
            default: default.clone(),
        };
        assert!(Arc::ptr_eq(&resolver.pick(Some("API.example.com")), &exact));
        assert!(Arc::ptr_eq(&resolver.pick(Some("web.example.com")), &wild));
        assert!(Arc::ptr_eq(&resolver.pick(Some("a.b.example.com")), &default), "a wildcard covers one label");
        assert!(Arc::ptr_eq(&resolver.pick(Some("other.org")), &default));
        assert!(Arc::ptr_eq(&resolver.pick(None), &default));
    }
}
