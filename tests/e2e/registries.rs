//! The shared registries against real processes: two wasmesh processes sharing a real etcd
//! (and surviving its outage), and the Consul backend against `FakeConsulAgent`, an in-test
//! HTTP server that follows Consul's documented request and response shapes (no Consul binary
//! can be installed on these machines).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::harness::{Etcd, Proxy, backends, call_json, client, eventually, get};

const API: &str = "/api/v1/mesh/v2";
const USERS_ROUTE: &str = "[[routes]]\nname = \"api\"\nservice = \"users\"\n[[services]]\nname = \"users\"\n";

fn etcd_config(etcd: &Etcd) -> String {
    format!(
        "{USERS_ROUTE}\n[registry]\nbackend = \"etcd\"\n[registry.etcd]\nendpoints = [\"{}\"]\nlease_ttl = \"3s\"\n",
        etcd.url
    )
}

async fn discover(proxy: &Proxy, service: &str) -> Vec<Value> {
    let (_, body) = call_json("GET", &proxy.admin_url(&format!("{API}/discover/{service}")), None, None).await;
    body["instances"].as_array().cloned().unwrap_or_default()
}

async fn registry_connected(proxy: &Proxy) -> bool {
    let (_, health) = call_json("GET", &proxy.admin_url(&format!("{API}/health")), None, None).await;
    health["registries"][0]["connected"] == true
}

fn registration(addr: std::net::SocketAddr) -> Value {
    json!({ "service_name": "users", "address": addr.ip().to_string(), "port": addr.port() })
}

#[tokio::test]
async fn two_proxies_share_an_etcd_registry_and_ride_out_its_outage() {
    let mut etcd = Etcd::start().await;
    let b = backends(2).await;
    let a = Proxy::start(&etcd_config(&etcd)).await;
    let other = Proxy::start(&etcd_config(&etcd)).await;
    eventually(Duration::from_secs(5), "both proxies to connect", || async {
        (registry_connected(&a).await && registry_connected(&other).await).then_some(())
    })
    .await;

    // Registered on one, discoverable and routable on the other within a second.
    for backend in &b {
        let (status, body) =
            call_json("POST", &a.admin_url(&format!("{API}/register")), Some(&registration(backend.addr)), None).await;
        assert_eq!(status, 200, "{body}");
    }
    eventually(Duration::from_secs(1), "the other proxy to discover both", || async {
        (discover(&other, "users").await.len() == 2).then_some(())
    })
    .await;
    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        let resp = get(&other.url("/x")).await.expect("request");
        assert_eq!(resp.status(), 200);
        *seen.entry(resp.headers()["x-backend"].to_str().expect("ascii").to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // etcd goes away under load: both keep serving the last known instances, no errors.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for proxy in [a.url("/x"), other.url("/x")] {
        let (stop, failed, ok) = (stop.clone(), failed.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(proxy.parse().expect("url")).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    etcd.kill();
    eventually(Duration::from_secs(10), "the outage to show in the health view", || async {
        (!registry_connected(&a).await && !registry_connected(&other).await).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) =
        call_json("POST", &a.admin_url(&format!("{API}/register")), Some(&registration(b[0].addr)), None).await;
    assert_eq!(status, 503, "a registration during the outage is refused, not lost silently");

    etcd.restart().await;
    eventually(Duration::from_secs(10), "both proxies to reconnect", || async {
        (registry_connected(&a).await && registry_connected(&other).await).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during the etcd outage");
    assert!(ok.load(Ordering::Relaxed) > 50);

    // Registrations flow again, and the instances kept alive by `a` are still there.
    let extra = backends(1).await;
    let (status, _) =
        call_json("POST", &other.admin_url(&format!("{API}/register")), Some(&registration(extra[0].addr)), None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(3), "all three instances on both proxies", || async {
        (discover(&a, "users").await.len() == 3 && discover(&other, "users").await.len() == 3).then_some(())
    })
    .await;

    // Deregistering on one removes it from the other.
    let id = format!("users-{}-{}", b[0].addr.ip(), b[0].addr.port());
    let (status, _) = call_json("DELETE", &a.admin_url(&format!("{API}/register/{id}")), None, None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(1), "the deregistration to reach the other proxy", || async {
        (discover(&other, "users").await.len() == 2).then_some(())
    })
    .await;
}

/// An in-test stand-in for a Consul agent, following the documented shapes of
/// `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/:id`,
/// `GET /v1/catalog/services` and `GET /v1/health/service/:name?passing`, with blocking queries
/// (`index`, `wait`, `X-Consul-Index`).
struct FakeConsulAgent {
    addr: std::net::SocketAddr,
    state: Arc<ConsulState>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Default)]
struct ConsulState {
    inner: Mutex<ConsulInner>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct ConsulInner {
    index: u64,
    services: BTreeMap<String, Value>,
    /// Every write received: (method, path, body).
    writes: Vec<(String, String, Value)>,
}

impl ConsulState {
    fn bump(&self, change: impl FnOnce(&mut ConsulInner)) {
        let mut inner = self.inner.lock().expect("lock");
        change(&mut inner);
        inner.index += 1;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Waits while the caller's `index` is current, up to `wait`.
    async fn block(&self, index: u64, wait: Duration) {
        let notified = self.changed.notified();
        if self.inner.lock().expect("lock").index > index {
            return;
        }
        let _ = tokio::time::timeout(wait, notified).await;
    }
}

impl FakeConsulAgent {
    async fn start() -> Self {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let state = Arc::new(ConsulState::default());
        state.inner.lock().expect("lock").index = 10;
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (st, ts) = (state.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { return };
                let st = st.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(consul_answer(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                ts.lock().expect("lock").push(conn);
            }
        });
        tasks.lock().expect("lock").push(accept);
        Self { addr, state, tasks }
    }

    /// Stops answering: closes the listener and every connection.
    fn stop(&self) {
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

async fn consul_answer(state: &ConsulState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let index: u64 = query.get("index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait = query
        .get("wait")
        .and_then(|w| w.trim_end_matches('s').parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs);
    let reply = |status: StatusCode, value: Value, index: u64| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-consul-index", index.to_string())
            .body(Full::new(Bytes::from(value.to_string())))
            .expect("response")
    };
    match (method.as_str(), path.as_str()) {
        ("PUT", "/v1/agent/service/register") => {
            let id = body["ID"].as_str().unwrap_or_default().to_owned();
            state.bump(|s| {
                s.services.insert(id, body.clone());
                s.writes.push((method, path, body));
            });
            reply(StatusCode::OK, Value::Null, 0)
        }
        ("PUT", p) if p.starts_with("/v1/agent/service/deregister/") => {
            let id = p.rsplit('/').next().unwrap_or_default().to_owned();
            let known = state.inner.lock().expect("lock").services.contains_key(&id);
            if !known {
                return reply(StatusCode::NOT_FOUND, json!(format!("Unknown service ID {id:?}")), 0);
            }
            state.bump(|s| {
                s.services.remove(&id);
                s.writes.push((method, path, Value::Null));
            });
            reply(StatusCode::OK, Value::Null, 0)
        }
        ("GET", "/v1/catalog/services") => {
            state.block(index, wait).await;
            let inner = state.inner.lock().expect("lock");
            let mut names: BTreeMap<String, Value> = BTreeMap::from([("consul".to_owned(), json!([]))]);
            for s in inner.services.values() {
                names.insert(s["Name"].as_str().unwrap_or_default().to_owned(), s["Tags"].clone());
            }
            reply(StatusCode::OK, json!(names), inner.index)
        }
        ("GET", p) if p.starts_with("/v1/health/service/") => {
            assert!(query.contains_key("passing"), "discovery asks for passing instances only");
            state.block(index, wait).await;
            let name = p.rsplit('/').next().unwrap_or_default();
            let inner = state.inner.lock().expect("lock");
            let entries: Vec<Value> = inner
                .services
                .values()
                .filter(|s| s["Name"] == name)
                .map(|s| {
                    json!({
                        "Node": { "Node": "node-1", "Address": "127.0.0.1" },
                        "Service": {
                            "ID": s["ID"], "Service": s["Name"], "Address": s["Address"], "Port": s["Port"],
                            "Tags": s["Tags"], "Meta": s["Meta"], "Weights": s["Weights"],
                        },
                        "Checks": [{ "Status": "passing" }],
                    })
                })
                .collect();
            reply(StatusCode::OK, json!(entries), inner.index)
        }
        _ => reply(StatusCode::NOT_FOUND, json!("not found"), 0),
    }
}

#[tokio::test]
async fn the_consul_backend_registers_through_the_agent_and_discovers_by_blocking_queries() {
    let consul = FakeConsulAgent::start().await;
    let b = backends(2).await;
    let proxy = Proxy::start(&format!(
        "{USERS_ROUTE}\n[registry]\nbackend = \"consul\"\n[registry.consul]\naddress = \"{}\"\nwait = \"2s\"\n",
        consul.addr
    ))
    .await;

    // Registration goes to the agent in Consul's shape.
    let mut reg = registration(b[0].addr);
    reg["tags"] = json!(["v1"]);
    reg["weight"] = json!(3);
    let (status, body) = call_json("POST", &proxy.admin_url(&format!("{API}/register")), Some(&reg), None).await;
    assert_eq!(status, 200, "{body}");
    let id = format!("users-127.0.0.1-{}", b[0].addr.port());
    let written = consul.state.inner.lock().expect("lock").writes[0].clone();
    assert_eq!((written.0.as_str(), written.1.as_str()), ("PUT", "/v1/agent/service/register"));
    assert_eq!(written.2["ID"], id.as_str());
    assert_eq!(written.2["Name"], "users");
    assert_eq!(written.2["Port"], b[0].addr.port());
    assert_eq!(written.2["Tags"], json!(["v1"]));
    assert_eq!(written.2["Weights"]["Passing"], 3);

    // An instance another agent registered (empty service address: the node's is used)
    // arrives through the blocking query.
    consul.state.bump(|s| {
        s.services.insert(
            "users-other".into(),
            json!({ "ID": "users-other", "Name": "users", "Address": "", "Port": b[1].addr.port(), "Tags": [], "Meta": {}, "Weights": { "Passing": 1, "Warning": 1 } }),
        );
    });
    eventually(Duration::from_secs(2), "the other agent's instance", || async {
        (discover(&proxy, "users").await.len() == 2).then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let resp = get(&proxy.url("/x")).await.expect("request");
        assert_eq!(resp.status(), 200);
        seen.insert(resp.headers()["x-backend"].to_str().expect("ascii").to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Deregistration goes to the agent too.
    let (status, _) = call_json("DELETE", &proxy.admin_url(&format!("{API}/register/{id}")), None, None).await;
    assert_eq!(status, 200);
    let last = consul.state.inner.lock().expect("lock").writes.last().cloned().expect("write");
    assert_eq!(last.1, format!("/v1/agent/service/deregister/{id}"));
    eventually(Duration::from_secs(2), "the deregistration", || async {
        (discover(&proxy, "users").await.len() == 1).then_some(())
    })
    .await;

    // The agent goes away: the last known instance keeps serving and the outage shows.
    consul.stop();
    eventually(Duration::from_secs(8), "the outage to show", || async {
        (!registry_connected(&proxy).await).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/x")).await.expect("request").status(), 200);
    }
    assert_eq!(discover(&proxy, "users").await.len(), 1, "an outage never empties a service");
}
