//! The mesh API over HTTP against a real wasmesh with the embedded registry: register,
//! discover, call, deregister, TTL expiry, durability across `kill -9`, health, topology,
//! bad input, the token, and every operation of the OpenAPI document.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Proxy, backends, call_json, eventually, get};

const API: &str = "/api/v1/mesh/v2";

/// A route `api` to the service `users`, which has no static endpoints: registrations fill it.
const USERS_ROUTE: &str = "[[routes]]\nname = \"api\"\nservice = \"users\"\n[[services]]\nname = \"users\"\n";

fn registration(name: &str, addr: std::net::SocketAddr) -> Value {
    json!({ "service_name": name, "address": addr.ip().to_string(), "port": addr.port(), "tags": ["v1"], "metadata": { "zone": "a" } })
}

async fn api(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_json(method, &proxy.admin_url(&format!("{API}{path}")), body.as_ref(), None).await
}

/// Counts which backend answered `n` calls made through `POST call`.
async fn spread_via_call(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, body) =
            api(proxy, "POST", "/call", Some(json!({ "service_name": "users", "path": "/who" }))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], 200, "{body}");
        let backend = body["headers"]["x-backend"].as_str().expect("x-backend header").to_owned();
        *seen.entry(backend).or_default() += 1;
    }
    seen
}

/// Counts which backend answered `n` requests through the proxy listener.
async fn spread_via_route(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let resp = get(&proxy.url("/who")).await.expect("proxied request");
        assert_eq!(resp.status(), 200);
        let backend = resp.headers()["x-backend"].to_str().expect("ascii").to_owned();
        *seen.entry(backend).or_default() += 1;
    }
    seen
}

async fn instance_count(proxy: &Proxy, service: &str) -> Option<usize> {
    let (status, body) = api(proxy, "GET", &format!("/discover/{service}"), None).await;
    (status == 200).then(|| body["instances"].as_array().map_or(0, Vec::len))
}

#[tokio::test]
async fn registered_instances_are_discovered_called_balanced_and_deregistered() {
    let b = backends(3).await;
    let proxy = Proxy::start(USERS_ROUTE).await;

    for backend in &b {
        let (status, body) = api(&proxy, "POST", "/register", Some(registration("users", backend.addr))).await;
        assert_eq!(status, 200, "{body}");
        let id = format!("users-{}-{}", backend.addr.ip(), backend.addr.port());
        assert_eq!(
            body,
            json!({ "service_id": id, "status": "registered", "message": "Service users registered successfully" })
        );
    }
    // Every instance reaches a real health state: the default TCP check passes.
    let instances = eventually(Duration::from_secs(5), "three healthy instances", || async {
        let (_, body) = api(&proxy, "GET", "/discover/users", None).await;
        let list = body["instances"].as_array()?.clone();
        (list.len() == 3 && list.iter().all(|i| i["health"] == "healthy")).then_some(list)
    })
    .await;
    assert!(
        instances
            .iter()
            .all(|i| i["tags"] == json!(["v1"]) && i["metadata"]["zone"] == "a" && i["source"] == "registry")
    );

    let via_call = spread_via_call(&proxy, 30).await;
    assert_eq!(via_call.len(), 3, "calls reach every instance: {via_call:?}");
    assert!(via_call.values().all(|&n| n == 10), "round robin: {via_call:?}");
    let via_route = spread_via_route(&proxy, 30).await;
    assert_eq!(via_route.len(), 3, "the route reaches every instance: {via_route:?}");

    // Deregister one (by id) and one request later it no longer receives traffic.
    let gone = format!("users-{}-{}", b[0].addr.ip(), b[0].addr.port());
    let (status, body) = api(&proxy, "DELETE", &format!("/register/{gone}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(instance_count(&proxy, "users").await, Some(2));
    let hits_before = b[0].hits();
    let after = spread_via_route(&proxy, 20).await;
    assert!(!after.contains_key("b0"), "deregistered instance still served: {after:?}");
    assert_eq!(b[0].hits(), hits_before);

    // The other way to deregister: by its parts.
    let (status, _) = api(
        &proxy,
        "POST",
        "/deregister",
        Some(json!({ "service_name": "users", "address": b[1].addr.ip().to_string(), "port": b[1].addr.port() })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(instance_count(&proxy, "users").await, Some(1));

    // Topology shows the observed edges from the route and from the mesh API.
    let (_, topo) = api(&proxy, "GET", "/topology", None).await;
    let edge = |source: &str| {
        topo["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["source"] == source && e["target"] == "users")
            .cloned()
    };
    let route_edge = edge("api").expect("route edge");
    assert_eq!(route_edge["requests"], 50, "{route_edge}");
    assert_eq!(route_edge["errors"], 0);
    let call_edge = edge("call:users").expect("call edge");
    assert_eq!(call_edge["requests"], 30);
    assert_eq!(call_edge["source_kind"], "call");
    assert!(topo["services"].as_array().expect("services").iter().any(|s| s["name"] == "users"));
}

#[tokio::test]
async fn a_registration_that_is_not_renewed_expires() {
    let b = backends(1).await;
    let proxy = Proxy::start(USERS_ROUTE).await;
    let mut reg = registration("users", b[0].addr);
    reg["ttl_seconds"] = json!(1);
    assert_eq!(api(&proxy, "POST", "/register", Some(reg.clone())).await.0, 200);
    assert_eq!(instance_count(&proxy, "users").await, Some(1));
    // Renewing (registering again) pushes the expiry back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(api(&proxy, "POST", "/register", Some(reg)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(instance_count(&proxy, "users").await, Some(1), "renewed registration expired early");
    eventually(Duration::from_secs(5), "the registration to expire", || async {
        (instance_count(&proxy, "users").await == Some(0)).then_some(())
    })
    .await;
    let resp = get(&proxy.url("/x")).await.expect("request");
    assert_eq!(resp.status(), 503, "no instance left: no healthy endpoint");
}

#[tokio::test]
async fn an_acknowledged_registration_survives_kill_9() {
    let b = backends(1).await;
    let mut proxy = Proxy::start(USERS_ROUTE).await;
    let (status, _) = api(&proxy, "POST", "/register", Some(registration("orders", b[0].addr))).await;
    assert_eq!(status, 200);
    proxy.kill9_and_restart().await;
    assert_eq!(instance_count(&proxy, "orders").await, Some(1), "lost after kill -9:\n{}", proxy.log());
    let (status, body) = api(&proxy, "POST", "/call", Some(json!({ "service_name": "orders", "path": "/x" }))).await;
    assert_eq!((status, body["status"].as_u64()), (200, Some(200)), "{body}");
}

#[tokio::test]
async fn the_health_view_shows_real_states_breakers_and_the_registry() {
    let b = backends(2).await;
    let proxy = Proxy::start(USERS_ROUTE).await;
    for backend in &b {
        let mut reg = registration("users", backend.addr);
        reg["health_check"] =
            json!({ "kind": "http", "path": "/health", "interval": "100ms", "interval_jitter": "0s" });
        assert_eq!(api(&proxy, "POST", "/register", Some(reg)).await.0, 200);
    }
    b[1].set_health_status(503);
    let health = eventually(Duration::from_secs(5), "one healthy and one unhealthy instance", || async {
        let (_, h) = api(&proxy, "GET", "/health", None).await;
        let users = h["services"].as_array()?.iter().find(|s| s["name"] == "users")?.clone();
        let states: Vec<&str> = users["instances"].as_array()?.iter().filter_map(|i| i["health"].as_str()).collect();
        (states.contains(&"healthy") && states.contains(&"unhealthy")).then_some(h)
    })
    .await;
    assert_eq!(health["registries"][0], json!({ "backend": "embedded", "connected": true, "last_error": null }));
    let users = health["services"].as_array().expect("services").iter().find(|s| s["name"] == "users").expect("users");
    assert_eq!(users["breaker"], "closed");
    assert_eq!(users["status"], "degraded");
    assert_eq!(health["status"], "degraded");
    // Only the healthy instance is routed to.
    let seen = spread_via_route(&proxy, 10).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b0"]);
}

#[tokio::test]
async fn bad_input_is_a_400_with_the_reason_and_changes_nothing() {
    let proxy = Proxy::start(USERS_ROUTE).await;
    let url = proxy.admin_url(&format!("{API}/register"));
    let raw = |body: &'static str| {
        let url = url.clone();
        async move {
            let req = http::Request::post(url).body(http_body_util::Full::new(bytes::Bytes::from(body))).expect("req");
            let resp = crate::harness::send(req).await;
            (resp.status().as_u16(), crate::harness::json(resp).await)
        }
    };
    let (status, body) = raw("{not json").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("invalid JSON"), "{body}");
    let (status, body) = raw(r#"{"service_name":"users","address":"127.0.0.1"}"#).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("port"), "{body}");
    let (status, body) = raw(r#"{"service_name":"users","address":"127.0.0.1","port":70000}"#).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("out of range"), "{body}");
    let (status, _) = raw(r#"{"service_name":"users","address":"127.0.0.1","port":80,"colour":"red"}"#).await;
    assert_eq!(status, 400, "unknown fields are refused");

    assert_eq!(instance_count(&proxy, "users").await, Some(0), "nothing half-written");
    let (status, body) = api(&proxy, "GET", "/discover/nobody", None).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().expect("message").contains("nobody"), "{body}");
    let (status, _) = api(&proxy, "POST", "/call", Some(json!({ "service_name": "nobody", "path": "/" }))).await;
    assert_eq!(status, 404);
    let (status, _) = api(&proxy, "POST", "/call", Some(json!({ "service_name": "users", "path": "no-slash" }))).await;
    assert_eq!(status, 400);
    let (status, _) = api(&proxy, "DELETE", "/register/users-1.2.3.4-5", None).await;
    assert_eq!(status, 404);
    let (status, _) = api(&proxy, "GET", "/register", None).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn with_a_token_every_admin_request_needs_it() {
    let proxy = Proxy::start_full(USERS_ROUTE, "", Some("s3cret")).await;
    for path in [format!("{API}/health"), "/metrics".to_owned()] {
        let url = proxy.admin_url(&path);
        assert_eq!(call_json("GET", &url, None, None).await.0, 401, "{path} without a token");
        assert_eq!(call_json("GET", &url, None, Some("wrong")).await.0, 401, "{path} with a wrong token");
        assert_eq!(call_json("GET", &url, None, Some("s3cret")).await.0, 200, "{path} with the token");
    }
    let reg = json!({ "service_name": "users", "address": "127.0.0.1", "port": 9 });
    let url = proxy.admin_url(&format!("{API}/register"));
    assert_eq!(call_json("POST", &url, Some(&reg), None).await.0, 401);
    assert_eq!(call_json("POST", &url, Some(&reg), Some("s3cret")).await.0, 200);
}

#[tokio::test]
async fn every_operation_in_the_openapi_document_is_mounted() {
    let b = backends(1).await;
    let proxy = Proxy::start(USERS_ROUTE).await;
    let (status, doc) = api(&proxy, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "{} paths", paths.len());
    // The examples name 127.0.0.1:9001; point them at a live backend instead.
    let live = |v: &Value| {
        let text = v.to_string().replace("9001", &b[0].addr.port().to_string());
        serde_json::from_str::<Value>(&text).expect("json")
    };
    let mut called = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let mut url_path = path.clone();
            for param in op["parameters"].as_array().into_iter().flatten() {
                let example = live(&param["example"]);
                let name = param["name"].as_str().expect("name");
                url_path = url_path.replace(&format!("{{{name}}}"), example.as_str().expect("string example"));
            }
            if method == "delete" || path.ends_with("/deregister") {
                // Each deregistration needs an instance to remove.
                let reg =
                    paths["/api/v1/mesh/v2/register"]["post"]["requestBody"]["content"]["application/json"]["example"]
                        .clone();
                assert_eq!(api(&proxy, "POST", "/register", Some(live(&reg))).await.0, 200);
            }
            let body = op["requestBody"]["content"]["application/json"]["example"].clone();
            let body = (!body.is_null()).then(|| live(&body));
            let url = proxy.admin_url(&url_path);
            let req = http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&url)
                .body(http_body_util::Full::new(bytes::Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
                .expect("request");
            let resp = crate::harness::send(req).await;
            let status = resp.status().as_u16().to_string();
            let documented = op["responses"].as_object().expect("responses");
            assert!(
                documented.contains_key(&status),
                "{method} {url_path} answered {status}, not one of {:?}",
                documented.keys().collect::<Vec<_>>()
            );
            assert_ne!(status, "404", "{method} {url_path} is documented but answered 404");
            called += 1;
        }
    }
    assert!(called >= 12);
}
