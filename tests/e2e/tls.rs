//! TLS: termination with SNI and ALPN, certificate rotation under load, bad certificates
//! refused, and upstream TLS with CA verification and client certificates. Certificates are
//! generated at test time by a throwaway CA (rcgen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::harness::{Proxy, backends, client, eventually, json, one_route, wasmesh_bin};

/// A throwaway certificate authority writing PEM files into a temp dir.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&key).expect("CA cert");
        let ca_pem = ca.pem();
        Self { issuer: Issuer::new(params, key), ca_pem, dir: tempfile::tempdir().expect("temp dir") }
    }

    /// The CA certificate's PEM file.
    fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA");
        path
    }

    /// Issues a certificate for `names` valid until `not_after_year`, written as
    /// `{file}.pem` and `{file}.key`; returns (cert path, key path, leaf DER).
    fn issue(&self, file: &str, names: &[&str], not_after_year: i32) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        write_atomically(&key_path, key.serialize_pem().as_bytes());
        write_atomically(&cert_path, cert.pem().as_bytes());
        (cert_path, key_path, cert.der().to_vec())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("CA root");
        roots
    }
}

/// Writes through a temp file and a rename, as certificate renewal tools do.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What one TLS request saw.
struct Seen {
    version: Version,
    status: u16,
    body: serde_json::Value,
    leaf: Vec<u8>,
}

/// Opens a TLS connection to `addr` sending `sni`, trusting `pki`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
    alpn: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// One GET over a new TLS connection, speaking whatever ALPN chose.
async fn tls_get(addr: SocketAddr, sni: &str, pki: &Pki, alpn: &[&str], path: &str) -> anyhow::Result<Seen> {
    let tls = tls_connect(addr, sni, pki, alpn).await?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let req = Request::get(path).header("host", sni).body(Full::<Bytes>::default())?;
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{sni}{path}").parse()?;
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let bytes = resp.into_body().collect().await?.to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok(Seen { version, status, body, leaf })
}

/// A `[listeners.tls]` table for the harness's `main` listener.
fn listener_tls(certs: &[(&Path, &Path)]) -> String {
    let list: Vec<String> =
        certs.iter().map(|(c, k)| format!("{{ cert = \"{}\", key = \"{}\" }}", c.display(), k.display())).collect();
    format!("tls = {{ certificates = [{}] }}", list.join(", "))
}

#[tokio::test]
async fn terminates_tls_choosing_the_certificate_by_sni_and_h2_by_alpn() {
    let pki = Pki::new("wasmesh test CA");
    let (a_cert, a_key, a_der) = pki.issue("a", &["a.test"], 2099);
    let (w_cert, w_key, w_der) = pki.issue("wild", &["*.b.test"], 2099);
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_route(b[0].addr), &listener_tls(&[(&a_cert, &a_key), (&w_cert, &w_key)])).await;

    let seen = tls_get(proxy.listen, "a.test", &pki, &["http/1.1"], "/echo").await.expect("a.test");
    assert_eq!((seen.status, seen.version), (200, Version::HTTP_11));
    assert_eq!(seen.leaf, a_der, "SNI a.test gets the a.test certificate");
    assert_eq!(seen.body["headers"]["x-forwarded-proto"], "https", "{}", seen.body);

    let seen = tls_get(proxy.listen, "api.b.test", &pki, &["h2", "http/1.1"], "/echo").await.expect("api.b.test");
    assert_eq!((seen.status, seen.version), (200, Version::HTTP_2), "ALPN picks h2");
    assert_eq!(seen.leaf, w_der, "SNI api.b.test gets the *.b.test certificate");

    // A client that trusts only the first certificate's name still gets it without SNI match.
    let unknown = tls_get(proxy.listen, "other.test", &pki, &["http/1.1"], "/").await;
    assert!(unknown.is_err(), "the default certificate does not cover other.test, so verification fails");

    // Plain HTTP on the TLS port is not served.
    assert!(crate::harness::get(&proxy.url("/")).await.is_err(), "cleartext on a TLS listener fails");
    let failures = proxy.metric("wasmesh_tls_handshake_failures_total{listener=\"main\"}").await.unwrap_or(0.0);
    assert!(failures >= 2.0, "failed handshakes are counted: {failures}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_with_zero_failed_requests() {
    let pki = Pki::new("wasmesh test CA");
    let (cert, key, old_der) = pki.issue("site", &["site.test"], 2099);
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_route(b[0].addr), &listener_tls(&[(&cert, &key)])).await;

    // A kept-alive connection opened before the renewal keeps working after it.
    let kept = tls_connect(proxy.listen, "site.test", &pki, &["http/1.1"]).await.expect("connect");
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(kept)).await.expect("handshake");
    tokio::spawn(conn);

    let pki = Arc::new(pki);
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (pki, ok, failed, stop, addr) = (pki.clone(), ok.clone(), failed.clone(), stop.clone(), proxy.listen);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tls_get(addr, "site.test", &pki, &["http/1.1"], "/").await {
                        Ok(s) if s.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, new_der) = pki.issue("site", &["site.test"], 2098);
    assert_ne!(old_der, new_der);
    eventually(Duration::from_secs(10), "new connections get the renewed certificate", || {
        let pki = pki.clone();
        let new_der = new_der.clone();
        async move {
            let seen = tls_get(proxy.listen, "site.test", &pki, &["http/1.1"], "/").await.ok()?;
            (seen.leaf == new_der).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let resp =
        kept.send_request(Request::get("/").header("host", "site.test").body(Full::<Bytes>::default()).expect("req"));
    assert_eq!(resp.await.expect("the old connection still serves").status(), 200);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 20, "the load ran: {ok} requests");
    assert_eq!(failed, 0, "no request failed across the renewal ({ok} succeeded)");
}

#[tokio::test]
async fn expired_or_mismatched_certificates_are_refused_with_the_file_and_reason() {
    let pki = Pki::new("wasmesh test CA");
    let (expired, expired_key, _) = pki.issue("expired", &["x.test"], 2021);
    let (good, good_key, good_der) = pki.issue("good", &["x.test"], 2099);
    let (_, other_key, _) = pki.issue("other", &["y.test"], 2099);
    let b = backends(1).await;

    // At start: the process exits with a message naming the listener, file and reason.
    for ((cert, key), reason) in
        [((&expired, &expired_key), "certificate expired on"), ((&good, &other_key), "does not match")]
    {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("wasmesh.toml");
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n{}\n{}",
            listener_tls(&[(cert, key)]),
            one_route(b[0].addr)
        );
        std::fs::write(&config, text).expect("config");
        let out = std::process::Command::new(wasmesh_bin())
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .expect("run wasmesh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "refused at start");
        assert!(stderr.contains("listener `edge`"), "names the listener: {stderr}");
        assert!(stderr.contains(&cert.display().to_string()), "names the file: {stderr}");
        assert!(stderr.contains(reason), "says why ({reason}): {stderr}");
    }

    // On reload: the expired certificate is refused and the old one keeps serving.
    let proxy = Proxy::start_with(&one_route(b[0].addr), &listener_tls(&[(&good, &good_key)])).await;
    std::fs::copy(&expired, &good).expect("replace with the expired certificate");
    std::fs::copy(&expired_key, &good_key).expect("and its key");
    let outcome = eventually(Duration::from_secs(10), "the reload is refused", || async {
        let status = json(client().get(proxy.admin_url("/config").parse().ok()?).await.ok()?).await;
        let error = status["last_error"]["message"].as_str()?.to_owned();
        Some(error)
    })
    .await;
    assert!(outcome.contains("certificate expired on"), "{outcome}");
    let seen = tls_get(proxy.listen, "x.test", &pki, &["http/1.1"], "/").await.expect("still serving");
    assert_eq!((seen.status, seen.leaf), (200, good_der), "the previous certificate stays");
}

/// A TLS acceptor with a certificate for `names` from `pki`, offering `alpn`, that asks for a
/// client certificate without requiring one.
fn acceptor(pki: &Pki, names: &[&str], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let (cert, key, _) = pki.issue("backend", names, 2099);
    let chain = CertificateDer::pem_file_iter(&cert).expect("chain").collect::<Result<Vec<_>, _>>().expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
        .allow_unauthenticated()
        .build()
        .expect("verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS backend that answers every request with what it saw: protocol, path and whether
/// the client presented a certificate.
async fn tls_backend(pki: &Pki, names: &[&str]) -> SocketAddr {
    let acceptor = acceptor(pki, names, &[b"h2", b"http/1.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let seen = serde_json::json!({
                        "version": format!("{:?}", req.version()),
                        "path": req.uri().path(),
                        "client_cert": client_cert,
                    });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(seen.to_string()))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_tls_verifies_the_endpoint_and_presents_a_client_certificate() {
    let pki = Pki::new("wasmesh test CA");
    let stranger = Pki::new("some other CA");
    let backend = tls_backend(&pki, &["backend.test"]).await;
    let (client_cert, client_key, _) = pki.issue("client", &["proxy.test"], 2099);
    let ca = pki.ca_file();
    let wrong_ca = stranger.ca_file();
    let config = format!(
        r#"
[[routes]]
name = "h1"
service = "tls-h1"
match = {{ path_prefix = "/h1" }}
[[routes]]
name = "h2"
service = "tls-h2"
match = {{ path_prefix = "/h2" }}
[[routes]]
name = "wrong"
service = "wrong-ca"
match = {{ path_prefix = "/wrong" }}

[[services]]
name = "tls-h1"
endpoints = [{{ address = "{backend}" }}]
tls = {{ ca_file = "{ca}", server_name = "backend.test", client_cert = "{cc}", client_key = "{ck}" }}
[[services]]
name = "tls-h2"
protocol = "h2"
endpoints = [{{ address = "{backend}" }}]
tls = {{ ca_file = "{ca}", server_name = "backend.test" }}
[[services]]
name = "wrong-ca"
endpoints = [{{ address = "{backend}" }}]
tls = {{ ca_file = "{wrong}", server_name = "backend.test" }}
"#,
        ca = ca.display(),
        cc = client_cert.display(),
        ck = client_key.display(),
        wrong = wrong_ca.display(),
    );
    let proxy = Proxy::start(&config).await;

    let seen = json(client().get(proxy.url("/h1/x").parse().expect("url")).await.expect("h1")).await;
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["path"], "/h1/x");
    assert_eq!(seen["client_cert"], true, "mutual TLS: the proxy presented its certificate");

    let seen = json(client().get(proxy.url("/h2/y").parse().expect("url")).await.expect("h2")).await;
    assert_eq!(seen["version"], "HTTP/2.0", "h2 negotiated over TLS: {seen}");
    assert_eq!(seen["client_cert"], false);

    let resp = client().get(proxy.url("/wrong").parse().expect("url")).await.expect("wrong CA");
    assert_eq!(resp.status(), 502, "an endpoint the CA does not vouch for is refused");
    let log = proxy.log();
    assert!(log.contains("TLS handshake with"), "the log says why: {log}");
}

/// A backend that speaks only HTTP/2: over TLS offering ALPN `h2` alone when given an
/// acceptor, else h2c. `/health` answers `{"status":"UP"}` while `up` holds, else
/// `{"status":"DOWN"}`; `probes` counts those requests.
struct Http2Only {
    addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    probes: Arc<AtomicU64>,
}

impl Http2Only {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, probes) = (Arc::new(std::sync::atomic::AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        let (health, count) = (up.clone(), probes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (tls, health, count) = (tls.clone(), health.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (health, count) = (health.clone(), count.clone());
                        async move {
                            let body = if req.uri().path() == "/health" {
                                count.fetch_add(1, Ordering::Relaxed);
                                let status = if health.load(Ordering::Relaxed) { "UP" } else { "DOWN" };
                                format!("{{\"status\":\"{status}\"}}")
                            } else {
                                "http2 only\n".to_owned()
                            };
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            http2.serve_connection(TokioIo::new(stream), service).await
                        }
                        None => http2.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        Self { addr, up, probes }
    }
}

#[tokio::test]
async fn health_probes_speak_http2_to_h2_and_h2c_services() {
    let pki = Pki::new("wasmesh test CA");
    let over_tls = Http2Only::start(Some(acceptor(&pki, &["backend.test"], &[b"h2"]))).await;
    let cleartext = Http2Only::start(None).await;
    let ca = pki.ca_file();
    let config = format!(
        r#"
{plugin}
[[routes]]
name = "tls"
service = "h2-tls"
match = {{ path_prefix = "/tls" }}
[[routes]]
name = "clear"
service = "h2c"

[[services]]
name = "h2-tls"
protocol = "h2"
endpoints = [{{ address = "{tls_addr}" }}]
tls = {{ ca_file = "{ca}", server_name = "backend.test" }}
health_check = {{ path = "/health", interval = "100ms", interval_jitter = "0s", plugin = "json" }}
[[services]]
name = "h2c"
protocol = "h2c"
endpoints = [{{ address = "{clear_addr}" }}]
health_check = {{ path = "/health", interval = "100ms", interval_jitter = "0s" }}
"#,
        plugin = crate::harness::plugin_toml("json", "health_check", "json_health.wasm", "{}", ""),
        tls_addr = over_tls.addr,
        clear_addr = cleartext.addr,
        ca = ca.display(),
    );
    let proxy = Proxy::start(&config).await;
    let health = |addr: SocketAddr| {
        let url = proxy.admin_url("/upstreams");
        async move {
            let status = json(client().get(url.parse().ok()?).await.ok()?).await;
            let endpoints = status["services"].as_array()?.iter().flat_map(|s| s["endpoints"].as_array().cloned());
            let endpoint = endpoints.flatten().find(|e| e["address"] == addr.to_string())?;
            Some(endpoint["health"].as_str()?.to_owned())
        }
    };
    for backend in [&over_tls, &cleartext] {
        eventually(Duration::from_secs(10), "the HTTP/2-only backend is healthy", || async {
            (health(backend.addr).await? == "healthy").then_some(())
        })
        .await;
        assert!(backend.probes.load(Ordering::Relaxed) > 0, "probes reached {}", backend.addr);
    }
    // The plugin judges the body read over HTTP/2: a DOWN body makes the endpoint unhealthy.
    over_tls.up.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(10), "the endpoint whose body says DOWN is unhealthy", || async {
        (health(over_tls.addr).await? == "unhealthy").then_some(())
    })
    .await;
    let resp = client().get(proxy.url("/").parse().expect("url")).await.expect("h2c request");
    assert_eq!(resp.status(), 200, "the healthy h2c endpoint serves");
}
