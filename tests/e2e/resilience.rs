//! Fault injection against real backends: health checks, ejection, breaking, limits, retries,
//! and the protection a service gets without any resilience settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use wasmesh_demo_backend::Backend;

use serde_json::{Value, json as json_value};

use crate::harness::{
    Backlogged, Proxy, backends, call_json, client, endpoints, eventually, free_port, get, json, send, text,
};

/// Starts a backend on `addr`, waiting for the port to be free again after a stop.
async fn restart(name: &str, addr: SocketAddr) -> Backend {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Backend::start(name, addr).await {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot restart {name} on {addr}: {e}"),
        }
    }
}

/// The `/upstreams` entry of endpoint `addr`.
async fn endpoint_status(proxy: &Proxy, addr: SocketAddr) -> serde_json::Value {
    let status = json(get(&proxy.admin_url("/upstreams")).await.expect("upstreams")).await;
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| s["endpoints"].as_array().expect("endpoints").iter())
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .expect("endpoint listed")
}

/// Polls until `check` holds for endpoint `addr`; returns how long that took.
async fn wait_for(
    proxy: &Proxy,
    addr: SocketAddr,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = endpoint_status(proxy, addr).await;
        if check(&status) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "endpoint {addr} did not reach the state in {limit:?}: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn service(name: &str, endpoints: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"r-{name}\"\nservice = \"{name}\"\n\n[[services]]\nname = \"{name}\"\nendpoints = {endpoints}\n{extra}\n"
    )
}

#[tokio::test]
async fn killing_a_backend_under_load_costs_almost_no_requests() {
    let mut b = backends(3).await;
    let extra = r#"
[services.health_check]
kind = "http"
path = "/health"
interval = "200ms"
interval_jitter = "50ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
[services.outlier_detection]
consecutive_gateway_failure = 2
base_ejection_time = "1s"
max_ejection_percent = 34
[services.retry]
retry_on = ["connect-failure", "reset", "gateway-error"]
num_retries = 2
backoff_base = "5ms"
backoff_max = "20ms"
"#;
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    let victim = b[2].addr;
    wait_for(&proxy, victim, Duration::from_secs(3), |e| e["health"] == "healthy").await;

    // ~300 requests/s from 6 workers for 4 s.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (ok, failed, url) = (ok.clone(), failed.clone(), proxy.url("/"));
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while Instant::now() < stop_at {
                tick.tick().await;
                match c.get(url.parse().expect("url")).await {
                    Ok(r) if r.status() == 200 => {
                        text(r).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = b.pop().expect("victim");
    killed.stop();
    drop(killed);
    let out_after = wait_for(&proxy, victim, Duration::from_secs(2), |e| e["routable"] == false).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let revived = restart("b2", victim).await;
    let back_after =
        wait_for(&proxy, victim, Duration::from_secs(3), |e| e["health"] == "healthy" && e["routable"] == true).await;
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let total = ok + failed;
    eprintln!(
        "kill test: {total} requests, {failed} failed; out of rotation after {out_after:?}, back after {back_after:?}"
    );
    assert!(total > 800, "load ran: {total}");
    assert!(failed * 1000 <= total, "{failed} of {total} requests failed (> 0.1%)");
    assert!(revived.hits() > 0, "the revived endpoint receives traffic again (health probes at least)");
}

#[tokio::test]
async fn a_failing_service_opens_the_breaker_fails_fast_and_recovers() {
    let b = backends(1).await;
    let extra = r#"
[services.circuit_breaker.failure_rate]
threshold_percent = 50
minimum_requests = 10
window = "10s"
open_duration = "1s"
half_open_requests = 2
"#;
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    b[0].set_status(Some(500));
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 500);
    }
    let hits_when_open = b[0].hits();
    for _ in 0..20 {
        let started = Instant::now();
        let resp = get(&proxy.url("/")).await.expect("request");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["x-wasmesh-error"], "circuit_open");
        assert_eq!(resp.headers()["x-wasmesh-shed"], "circuit_open");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(b[0].hits(), hits_when_open, "an open breaker sends nothing upstream");
    let status = json(get(&proxy.admin_url("/upstreams")).await.expect("status")).await;
    assert_eq!(status["services"][0]["breaker"], "open");

    b[0].set_status(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200, "half-open probes pass, then closed");
    }
    let status = json(get(&proxy.admin_url("/upstreams")).await.expect("status")).await;
    assert_eq!(status["services"][0]["breaker"], "closed");
    let metrics = text(get(&proxy.admin_url("/metrics")).await.expect("metrics")).await;
    for state in ["open", "half_open", "closed"] {
        let sample = format!("wasmesh_breaker_transitions_total{{service=\"s\",reason=\"{state}\"}} 1");
        assert!(metrics.contains(&sample), "missing {sample}");
    }
}

#[tokio::test]
async fn excess_concurrency_is_shed_at_once_while_admitted_requests_complete() {
    let b = backends(1).await;
    let proxy = Proxy::start(&service("s", &endpoints(&b), "[services.circuit_breaker]\nmax_requests = 4\n")).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = proxy.url("/delay/600");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = get(&url).await.expect("request");
            let shed = resp.headers().get("x-wasmesh-shed").map(|v| v.to_str().unwrap_or("").to_owned());
            (resp.status().as_u16(), shed, started.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let admitted: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(admitted.len(), 4, "{results:?}");
    assert_eq!(shed.len(), 6, "{results:?}");
    assert!(
        shed.iter().all(|r| r.1.as_deref() == Some("max_requests") && r.2 < Duration::from_millis(400)),
        "{results:?}"
    );
    assert!(admitted.iter().all(|r| r.2 >= Duration::from_millis(550)));
}

/// What a request got: its status and `x-wasmesh-shed` header.
type Outcome = (u16, Option<String>);

/// Sends `n` GETs of `url` at once over `client`; returns what each got, in the order they
/// finished.
async fn at_once(client: Client<HttpConnector, Full<Bytes>>, url: &str, n: usize) -> Vec<Outcome> {
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let (client, url, done) = (client.clone(), url.parse().expect("url"), done.clone());
        tokio::spawn(async move {
            let resp = client.get(url).await.expect("request");
            let shed = resp.headers().get("x-wasmesh-shed").map(|v| v.to_str().unwrap_or("").to_owned());
            let status = resp.status().as_u16();
            text(resp).await;
            let _ = done.send((status, shed));
        });
    }
    drop(done);
    let mut outcomes = Vec::new();
    while let Some(outcome) = finished.recv().await {
        outcomes.push(outcome);
    }
    assert_eq!(outcomes.len(), n, "every request finished");
    outcomes
}

/// Checks that the first `shed` requests to finish were shed by `limit` (at once: before any
/// admitted one finished) and that the rest got `status`.
fn shed_first(outcomes: &[Outcome], shed: usize, limit: &str, status: u16) {
    let (first, rest) = outcomes.split_at(shed);
    assert!(first.iter().all(|o| *o == (503, Some(limit.to_owned()))), "{outcomes:?}");
    assert!(rest.iter().all(|o| *o == (status, None)), "{outcomes:?}");
}

#[tokio::test]
async fn http1_max_connections_sheds_requests_that_need_one_more_connection() {
    let b = backends(1).await;
    let proxy = Proxy::start(&service("s", &endpoints(&b), "[services.circuit_breaker]\nmax_connections = 2\n")).await;
    let outcomes = at_once(client(), &proxy.url("/delay/800"), 5).await;
    shed_first(&outcomes, 3, "max_connections", 200);
    assert_eq!(b[0].hits(), 2, "only the two admitted requests reached the backend");
    let shed = proxy.metric("wasmesh_shed_requests_total{service=\"s\",reason=\"max_connections\"}").await;
    assert_eq!(shed, Some(3.0));
}

#[tokio::test]
async fn http1_max_pending_requests_sheds_requests_beyond_those_waiting_for_a_connection() {
    // Connecting to it hangs: the first two requests wait for their connections until the
    // connect timeout, and the other three find no place to wait.
    let backlogged = Backlogged::start().await;
    let eps = format!("[{{ address = \"{}\" }}]", backlogged.addr);
    let extra = "[services.circuit_breaker]\nmax_pending_requests = 2\n[services.timeouts]\nconnect = \"1s\"\n";
    let proxy = Proxy::start(&service("s", &eps, extra)).await;
    let outcomes = at_once(client(), &proxy.url("/"), 5).await;
    shed_first(&outcomes, 3, "max_pending_requests", 504);
}

#[tokio::test]
async fn h2c_max_connections_counts_the_shared_connections_to_endpoints() {
    let b = backends(2).await;
    let extra = "protocol = \"h2c\"\n[services.circuit_breaker]\nmax_connections = 1\n";
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    // Round robin alternates: the first endpoint gets the service's one connection, and a
    // request to the other would need a second.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let resp = get(&proxy.url("/")).await.expect("request");
        let shed = resp.headers().get("x-wasmesh-shed").map(|v| v.to_str().unwrap_or("").to_owned());
        outcomes.push((resp.status().as_u16(), shed));
    }
    let (ok, shed) = ((200, None), (503, Some("max_connections".to_owned())));
    assert_eq!(outcomes, [ok.clone(), shed.clone(), ok, shed], "{}", proxy.log());
    // Concurrent requests to the connected endpoint share its connection; those to the other
    // are shed at once.
    let outcomes = at_once(client(), &proxy.url("/delay/800"), 8).await;
    shed_first(&outcomes, 4, "max_connections", 200);
    let mut opened = 0.0;
    for x in &b {
        let sample = format!("wasmesh_upstream_connections_opened_total{{endpoint=\"{}\"}}", x.addr);
        opened += proxy.metric(&sample).await.unwrap_or(0.0);
    }
    assert_eq!(opened, 1.0, "every admitted request went over the one connection");
}

#[tokio::test]
async fn h2c_max_pending_requests_sheds_requests_beyond_those_waiting_for_the_connection() {
    // Connecting to it hangs: one request opens the endpoint's connection, one waits for it,
    // and the other three find no place to wait.
    let backlogged = Backlogged::start().await;
    let eps = format!("[{{ address = \"{}\" }}]", backlogged.addr);
    let extra = "protocol = \"h2c\"\n[services.circuit_breaker]\nmax_pending_requests = 2\n\
                 [services.timeouts]\nconnect = \"1s\"\n";
    let proxy = Proxy::start(&service("s", &eps, extra)).await;
    let outcomes = at_once(client(), &proxy.url("/"), 5).await;
    shed_first(&outcomes, 3, "max_pending_requests", 504);
}

#[tokio::test]
async fn the_retry_budget_bounds_upstream_attempts() {
    let b = backends(2).await;
    for x in &b {
        x.set_status(Some(503));
        // Slow enough that all 40 requests are in flight before the first one fails.
        x.set_delay(Duration::from_millis(400));
    }
    // Only the budget may bound the attempts here: a breaker opening on the failures would
    // answer 503 without any attempt, and ejecting an endpoint would steer the retries.
    let extra = r#"
[services.retry]
retry_on = ["gateway-error"]
num_retries = 3
backoff_base = "50ms"
backoff_max = "50ms"
budget_percent = 20
min_retry_concurrency = 1
[services.outlier_detection]
enabled = false
[services.circuit_breaker.failure_rate]
enabled = false
"#;
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move { get(&url).await.expect("request").status().as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 503);
    }
    let attempts: u64 = b.iter().map(|x| x.hits()).sum();
    assert!(attempts > 40, "some retries were sent: {attempts}");
    // At most max_retries (3) retries run at once, each request holding one slot for its
    // remaining tries: 40 + 3 x 3 = 49, where no budget would allow 160.
    assert!(attempts <= 52, "without a budget 40 requests would make 160 attempts; made {attempts}");
    let exhausted = proxy.metric("wasmesh_retry_budget_exhausted_total{service=\"s\"}").await.unwrap_or(0.0);
    assert!(exhausted > 0.0);
    let status = json(get(&proxy.admin_url("/upstreams")).await.expect("upstreams")).await;
    let s = &status["services"][0];
    assert_eq!((&s["breaker"], &s["outlier_detection"]), (&json_value!("disabled"), &json_value!(false)), "{s}");
}

#[tokio::test]
async fn a_try_that_hangs_ends_at_the_per_try_timeout_and_the_retry_answers_within_the_route_timeout() {
    let b = backends(2).await;
    // b0 answers long after the route's whole timeout: only a per-try timeout saves a request
    // whose first try went there.
    b[0].set_delay(Duration::from_secs(30));
    let extra = r#"
[services.timeouts]
request = "3s"
[services.retry]
retry_on = ["gateway-error"]
num_retries = 1
per_try_timeout = "300ms"
backoff_base = "1ms"
backoff_max = "1ms"
"#;
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    for i in 0..4 {
        let resp = get(&proxy.url("/")).await.expect("request");
        assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.headers());
        assert_eq!(resp.headers()["x-backend"], "b1", "request {i}");
    }
    assert!(b[0].hits() > 0, "some first tries went to the hanging endpoint");
    let retries = proxy.metric("wasmesh_retries_total{service=\"s\"}").await.unwrap_or(0.0);
    assert_eq!(retries, b[0].hits() as f64, "each try cut at b0 was retried once");
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_once_they_reached_the_upstream() {
    let b = backends(1).await;
    b[0].set_status(Some(503));
    let extra = "[services.retry]\nretry_on = [\"5xx\"]\nnum_retries = 2\nbackoff_base = \"1ms\"\n";
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    let post = Request::post(proxy.url("/")).body(Full::new(Bytes::from_static(b"{}"))).expect("request");
    assert_eq!(send(post).await.status(), 503);
    assert_eq!(b[0].hits(), 1, "POST reached the upstream once and was not retried");
    assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 503);
    assert_eq!(b[0].hits(), 1 + 3, "GET was retried twice");
}

#[tokio::test]
async fn health_check_thresholds_are_exact_and_panic_mode_keeps_traffic_flowing() {
    let b = backends(2).await;
    let extra = r#"
[services.health_check]
path = "/health"
interval = "100ms"
interval_jitter = "20ms"
healthy_threshold = 3
unhealthy_threshold = 2
"#;
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    let target = b[0].addr;
    wait_for(&proxy, target, Duration::from_secs(2), |e| e["health"] == "healthy").await;

    b[0].set_health_status(503);
    let before = b[0].hits();
    wait_for(&proxy, target, Duration::from_secs(3), |e| e["health"] == "unhealthy").await;
    assert_eq!(b[0].hits() - before, 2, "unhealthy after exactly unhealthy_threshold failed probes");

    // Only b1 serves now.
    let b1_before = b[1].hits();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200);
    }
    assert!(b[1].hits() >= b1_before + 10);

    b[0].set_health_status(200);
    let before = b[0].hits();
    wait_for(&proxy, target, Duration::from_secs(3), |e| e["health"] == "healthy").await;
    assert_eq!(b[0].hits() - before, 3, "healthy after exactly healthy_threshold passing probes");

    // Both failing: below the 50% panic threshold traffic goes to all endpoints anyway.
    for x in &b {
        x.set_health_status(503);
    }
    for x in &b {
        wait_for(&proxy, x.addr, Duration::from_secs(3), |e| e["health"] == "unhealthy").await;
    }
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200, "panic mode");
    }
}

#[tokio::test]
async fn without_panic_mode_no_healthy_endpoint_means_503_and_tcp_checks_see_closed_ports() {
    let closed = free_port();
    let extra = "healthy_panic_threshold = 0\n[services.health_check]\nkind = \"tcp\"\ninterval = \"100ms\"\n";
    let eps = format!("[{{ address = \"127.0.0.1:{closed}\" }}]");
    let proxy = Proxy::start(&service("s", &eps, extra)).await;
    let addr: SocketAddr = format!("127.0.0.1:{closed}").parse().expect("addr");
    wait_for(&proxy, addr, Duration::from_secs(2), |e| e["health"] == "unhealthy").await;
    let resp = get(&proxy.url("/")).await.expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-wasmesh-error"], "no_endpoint");
}

#[tokio::test]
async fn consecutive_5xx_eject_an_endpoint_and_traffic_moves_away() {
    let b = backends(2).await;
    b[0].set_status(Some(500));
    let extra =
        "[services.outlier_detection]\nconsecutive_5xx = 3\nbase_ejection_time = \"30s\"\nmax_ejection_percent = 50\n";
    let proxy = Proxy::start(&service("s", &endpoints(&b), extra)).await;
    for _ in 0..6 {
        get(&proxy.url("/")).await.expect("request");
    }
    let status = endpoint_status(&proxy, b[0].addr).await;
    assert_eq!(status["ejected"], true, "{status}");
    let bad_hits = b[0].hits();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200);
    }
    assert_eq!(b[0].hits(), bad_hits, "no traffic to the ejected endpoint");
    let sample = format!("wasmesh_outlier_ejections_total{{service=\"s\",endpoint=\"{}\"}}", b[0].addr);
    assert_eq!(proxy.metric(&sample).await, Some(1.0));
}

/// A loopback address nothing listens on: connections to it are refused.
fn refusing_address() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

/// One `POST /api/v1/mesh/v2/call` of `GET /` on `service`: the answer's status and
/// `x-wasmesh-error` header.
async fn mesh_call(proxy: &Proxy, service: &str) -> (u64, Option<String>) {
    let url = proxy.admin_url("/api/v1/mesh/v2/call");
    let (status, body) =
        call_json("POST", &url, Some(&json_value!({ "service_name": service, "path": "/" })), None).await;
    assert_eq!(status, 200, "{body}");
    let error = body["headers"]["x-wasmesh-error"].as_str().map(str::to_owned);
    (body["status"].as_u64().expect("status"), error)
}

/// Forty calls to `service`, whose only instance refuses connections, with the default
/// breaker (50% failed of at least 20 requests): twenty 502s, then twenty 503s at once.
async fn forty_calls_open_the_breaker(proxy: &Proxy, service: &str) {
    let mut answers = Vec::new();
    for _ in 0..40 {
        answers.push(mesh_call(proxy, service).await);
    }
    let refused = (502, Some("upstream_connect".to_owned()));
    let open = (503, Some("circuit_open".to_owned()));
    assert!(answers[..20].iter().all(|a| *a == refused), "{answers:?}");
    assert!(answers[20..].iter().all(|a| *a == open), "{answers:?}");
}

/// `service`'s breaker as `GET /upstreams`, the mesh API's health view and its topology show
/// it, and the health view's status of the service; each as the OpenAPI document lists them.
async fn breaker_views(proxy: &Proxy, service: &str) -> (Vec<Value>, Value) {
    let named = |list: &Value| {
        list["services"].as_array().expect("services").iter().find(|s| s["name"] == service).cloned().expect("listed")
    };
    let upstreams = json(get(&proxy.admin_url("/upstreams")).await.expect("upstreams")).await;
    let health = json(get(&proxy.admin_url("/api/v1/mesh/v2/health")).await.expect("health")).await;
    let topology = json(get(&proxy.admin_url("/api/v1/mesh/v2/topology")).await.expect("topology")).await;
    let health = named(&health);
    let breakers =
        vec![named(&upstreams)["breaker"].clone(), health["breaker"].clone(), named(&topology)["breaker"].clone()];
    let doc = json(get(&proxy.admin_url("/api/v1/mesh/v2/openapi.json")).await.expect("openapi")).await;
    let schemas = &doc["components"]["schemas"];
    let listed = |values: &Value, v: &Value| values.as_array().expect("enum").contains(v);
    for breaker in &breakers {
        assert!(listed(&schemas["Breaker"]["enum"], breaker), "{breaker} is not in the document");
    }
    let statuses = &schemas["Health"]["properties"]["services"]["items"]["properties"]["status"]["enum"];
    assert!(listed(statuses, &health["status"]), "{} is not in the document", health["status"]);
    (breakers, health["status"].clone())
}

#[tokio::test]
async fn a_service_without_resilience_settings_breaks_on_a_refusing_instance_and_recovers() {
    let addr = refusing_address();
    let eps = format!("[{{ address = \"{addr}\" }}]");
    let proxy = Proxy::start(&service("s", &eps, "")).await;
    forty_calls_open_the_breaker(&proxy, "s").await;
    assert_eq!(breaker_views(&proxy, "s").await, (vec![json_value!("open"); 3], json_value!("down")));
    let resp = get(&proxy.url("/")).await.expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-wasmesh-error"], "circuit_open", "proxied traffic is refused too");

    // The instance comes back; while the breaker is open nothing is sent to it.
    let revived = restart("b0", addr).await;
    assert_eq!(mesh_call(&proxy, "s").await.0, 503);
    assert_eq!(revived.hits(), 0, "an open breaker calls no upstream");

    // A reload keeps the breaker's state; this one shortens its open time from the default 30 s.
    let shorter = service("s", &eps, "[services.circuit_breaker.failure_rate]\nopen_duration = \"1s\"\n");
    std::fs::write(&proxy.config_path, format!("{}{shorter}", proxy.header)).expect("write config");
    let (status, outcome) = call_json("POST", &proxy.admin_url("/reload"), None, None).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(breaker_views(&proxy, "s").await.0, vec![json_value!("open"); 3], "the reload kept it open");

    // Once the open time is over, half-open probes reach the instance and close the breaker.
    eventually(Duration::from_secs(10), "the breaker to close", || async {
        let (status, _) = mesh_call(&proxy, "s").await;
        (status == 200 && breaker_views(&proxy, "s").await.0 == vec![json_value!("closed"); 3]).then_some(())
    })
    .await;
    assert!(revived.hits() >= 3, "the half-open probes reached the instance");
}

#[tokio::test]
async fn a_registration_only_service_breaks_on_a_refusing_instance_and_recovers() {
    let addr = refusing_address();
    let proxy = Proxy::start("").await;
    let registration = json_value!({ "service_name": "ghost", "address": "127.0.0.1", "port": addr.port() });
    let (status, body) =
        call_json("POST", &proxy.admin_url("/api/v1/mesh/v2/register"), Some(&registration), None).await;
    assert_eq!(status, 200, "{body}");
    forty_calls_open_the_breaker(&proxy, "ghost").await;
    let opened = Instant::now();
    assert_eq!(breaker_views(&proxy, "ghost").await, (vec![json_value!("open"); 3], json_value!("down")));

    let revived = restart("ghost", addr).await;
    assert_eq!(mesh_call(&proxy, "ghost").await.0, 503);
    assert_eq!(revived.hits(), 0, "an open breaker calls no upstream");

    // No configuration to shorten it: the default open time, 30 s, has to pass.
    tokio::time::sleep_until((opened + Duration::from_secs(30)).into()).await;
    eventually(Duration::from_secs(10), "the breaker to close", || async {
        let (status, _) = mesh_call(&proxy, "ghost").await;
        (status == 200 && breaker_views(&proxy, "ghost").await.0 == vec![json_value!("closed"); 3]).then_some(())
    })
    .await;
    assert!(revived.hits() >= 3, "the half-open probes reached the instance");
}

#[tokio::test]
async fn consecutive_gateway_failures_eject_a_dead_endpoint_by_default() {
    let b = backends(1).await;
    let dead = refusing_address();
    let eps = format!("[{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]", b[0].addr);
    let proxy = Proxy::start(&service("s", &eps, "")).await;
    let mut failed = 0;
    for _ in 0..20 {
        if get(&proxy.url("/")).await.expect("request").status() == 502 {
            failed += 1;
        }
        if endpoint_status(&proxy, dead).await["ejected"] == true {
            break;
        }
    }
    let status = endpoint_status(&proxy, dead).await;
    assert_eq!((&status["ejected"], &status["routable"]), (&json_value!(true), &json_value!(false)), "{status}");
    assert_eq!(failed, 5, "ejected at its fifth consecutive gateway failure");

    let before = b[0].hits();
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200, "no traffic to the dead endpoint");
    }
    assert_eq!(b[0].hits() - before, 20);
    let sample = format!("wasmesh_outlier_ejections_total{{service=\"s\",endpoint=\"{dead}\"}}");
    assert_eq!(proxy.metric(&sample).await, Some(1.0));
    assert_eq!(breaker_views(&proxy, "s").await.0, vec![json_value!("closed"); 3], "5 failed of 25 does not open it");
}

#[tokio::test]
async fn without_panic_mode_an_ejected_only_endpoint_leaves_no_endpoint() {
    let dead = refusing_address();
    let eps = format!("[{{ address = \"{dead}\" }}]");
    let proxy = Proxy::start(&service("s", &eps, "healthy_panic_threshold = 0\n")).await;
    let mut answers = Vec::new();
    for _ in 0..25 {
        let resp = get(&proxy.url("/")).await.expect("request");
        let error = resp.headers().get("x-wasmesh-error").and_then(|v| v.to_str().ok()).map(str::to_owned);
        answers.push((resp.status().as_u16(), error));
    }
    let refused = (502, Some("upstream_connect".to_owned()));
    let none_left = (503, Some("no_endpoint".to_owned()));
    assert!(answers[..5].iter().all(|a| *a == refused), "{answers:?}");
    assert!(answers[5..].iter().all(|a| *a == none_left), "ejected at the fifth failure: {answers:?}");
    assert_eq!(endpoint_status(&proxy, dead).await["ejected"], true);
    // The 20 answers without an endpoint are the proxy's own, not the service's failures:
    // counted, 25 failures would have opened the breaker.
    assert_eq!(breaker_views(&proxy, "s").await.0, vec![json_value!("closed"); 3]);
}
