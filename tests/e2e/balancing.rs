//! Load balancing through the real proxy, counted at the backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::harness::{Proxy, backends, client, endpoints, text};

fn service(policy: &str, endpoints: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"all\"\nservice = \"s\"\n\n[[services]]\nname = \"s\"\nbalance = \"{policy}\"\n{extra}\nendpoints = {endpoints}\n"
    )
}

async fn hit(proxy: &Proxy, n: usize) {
    let c = client();
    for _ in 0..n {
        let resp = c.get(proxy.url("/").parse().expect("url")).await.expect("request");
        assert_eq!(resp.status(), 200);
        text(resp).await;
    }
}

#[tokio::test]
async fn round_robin_is_exact() {
    let b = backends(3).await;
    let proxy = Proxy::start(&service("round_robin", &endpoints(&b), "")).await;
    hit(&proxy, 300).await;
    let hits: Vec<u64> = b.iter().map(|b| b.hits()).collect();
    assert_eq!(hits, [100, 100, 100]);
}

#[tokio::test]
async fn weighted_round_robin_is_exact_and_random_is_within_tolerance() {
    let b = backends(3).await;
    let weighted = format!(
        "[{{ address = \"{}\", weight = 1 }}, {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 3 }}]",
        b[0].addr, b[1].addr, b[2].addr
    );
    let proxy = Proxy::start(&service("round_robin", &weighted, "")).await;
    hit(&proxy, 600).await;
    let hits: Vec<u64> = b.iter().map(|b| b.hits()).collect();
    assert_eq!(hits, [100, 200, 300]);
    drop(proxy);

    let r = backends(2).await;
    let weighted =
        format!("[{{ address = \"{}\", weight = 1 }}, {{ address = \"{}\", weight = 3 }}]", r[0].addr, r[1].addr);
    let proxy = Proxy::start(&service("random", &weighted, "")).await;
    hit(&proxy, 2000).await;
    let share = r[1].hits() as f64 / 2000.0;
    assert!((0.70..0.80).contains(&share), "weight-3 endpoint got {share} of traffic, want ~0.75");
}

async fn owners(proxy: &Proxy, keys: &[String]) -> HashMap<String, String> {
    let c = client();
    let mut out = HashMap::new();
    for key in keys {
        let req = Request::get(proxy.url("/")).header("x-user", key).body(Full::new(Bytes::new())).expect("request");
        let resp = c.request(req).await.expect("request");
        let backend = resp.headers()["x-backend"].to_str().expect("ascii").to_owned();
        text(resp).await;
        out.insert(key.clone(), backend);
    }
    out
}

#[tokio::test]
async fn ring_hash_is_sticky_and_moves_only_the_removed_endpoints_keys() {
    let b = backends(3).await;
    let hash = "hash_key = { source = \"header\", name = \"x-user\" }";
    let three = Proxy::start(&service("ring_hash", &endpoints(&b), hash)).await;
    let two = Proxy::start(&service("ring_hash", &endpoints(&b[..2]), hash)).await;
    let keys: Vec<String> = (0..150).map(|i| format!("user-{i}")).collect();

    let first = owners(&three, &keys).await;
    let again = owners(&three, &keys).await;
    assert_eq!(first, again, "the same key must reach the same endpoint");
    let used: std::collections::HashSet<_> = first.values().collect();
    assert_eq!(used.len(), 3, "keys should spread over all endpoints");

    let after = owners(&two, &keys).await;
    let removed = &b[2].name;
    for key in &keys {
        if &first[key] != removed {
            assert_eq!(first[key], after[key], "key {key} moved although its endpoint stayed");
        } else {
            assert_ne!(&after[key], removed);
        }
    }
}

/// Sends `n` requests, `concurrency` at a time.
async fn hit_concurrently(proxy: &Proxy, n: usize, concurrency: usize) {
    let c = Arc::new(client());
    let url: http::Uri = proxy.url("/").parse().expect("url");
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(concurrency) {
                let resp = c.get(url.clone()).await.expect("request");
                assert_eq!(resp.status(), 200);
                text(resp).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
}

#[tokio::test]
async fn load_aware_policies_avoid_a_slow_endpoint() {
    for policy in ["least_request", "peak_ewma"] {
        let b = backends(2).await;
        b[0].set_delay(Duration::from_millis(40));
        let proxy = Proxy::start(&service(policy, &endpoints(&b), "")).await;
        hit_concurrently(&proxy, 200, 8).await;
        let (slow, fast) = (b[0].hits(), b[1].hits());
        assert_eq!(slow + fast, 200);
        assert!(fast > slow * 3, "{policy}: fast endpoint got {fast}, slow got {slow}");
    }
}
