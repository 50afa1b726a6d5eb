//! Wasm plugins built from `plugins/` (run `plugins/build.sh` first) deciding routes, changing
//! and answering requests, and failing without taking the proxy down.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::harness::{
    Proxy, backends, call_json, eventually, free_port, get, json, plugin_toml, send, text, wasmesh_bin,
};

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn a_router_plugin_decides_the_service() {
    let b = backends(2).await;
    let config = format!(
        "{}\n[[routes]]\nname = \"r\"\nservice = \"stable\"\nrouter = \"canary\"\n\n[[services]]\nname = \"stable\"\nendpoints = [{{ address = \"{}\" }}]\n[[services]]\nname = \"canary\"\nendpoints = [{{ address = \"{}\" }}]\n",
        plugin_toml(
            "canary",
            "router",
            "canary_router.wasm",
            "{ canary = \"canary\", header = \"x-canary\", value = \"1\" }",
            ""
        ),
        b[0].addr,
        b[1].addr
    );
    let proxy = Proxy::start(&config).await;
    for _ in 0..5 {
        let seen = json(send(Request::get(proxy.url("/echo")).body(empty()).expect("req")).await).await;
        assert_eq!(seen["backend"], "b0");
        let seen =
            json(send(Request::get(proxy.url("/echo")).header("x-canary", "1").body(empty()).expect("req")).await)
                .await;
        assert_eq!(seen["backend"], "b1");
        assert_eq!(seen["headers"]["x-canary-routed"], "1", "the router's header mutation reached the backend");
    }
}

#[tokio::test]
async fn filters_change_headers_both_ways_and_answer_401_locally() {
    let b = backends(1).await;
    // The response hook reads `date` (the backend sends one) and `cache-control` (it does not)
    // from the backend's header lines, and replaces its `content-type`.
    let filter_cfg = r#"{ request_set = { "x-env" = "prod" }, request_remove = ["x-debug"], response_set = { "x-served-by" = "wasmesh", "content-type" = "application/vnd.echo+json" }, response_remove = ["x-backend"], response_default = { "cache-control" = "no-store", "date" = "never" } }"#;
    let auth_cfg = r#"{ api_keys = ["k1"], request_id = false }"#;
    let config = format!(
        "{}{}\n[[routes]]\nname = \"open\"\nservice = \"s\"\nfilters = [\"headers\"]\nmatch = {{ path_prefix = \"/echo\" }}\n[[routes]]\nname = \"locked\"\nservice = \"s\"\nfilters = [\"auth\"]\nmatch = {{ path_prefix = \"/locked\" }}\n\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n",
        plugin_toml("headers", "filter", "header_filter.wasm", filter_cfg, ""),
        plugin_toml("auth", "filter", "header_filter.wasm", auth_cfg, ""),
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;
    let resp = send(Request::get(proxy.url("/echo")).header("x-debug", "1").body(empty()).expect("req")).await;
    assert_eq!(resp.headers()["x-served-by"], "wasmesh");
    assert!(resp.headers().get("x-backend").is_none(), "response header removed by the filter");
    let all = |name: &str| resp.headers().get_all(name).iter().map(|v| v.to_str().unwrap_or("?")).collect::<Vec<_>>();
    assert_eq!(all("content-type"), ["application/vnd.echo+json"], "the backend's value replaced, not repeated");
    assert_eq!(all("cache-control"), ["no-store"], "a default for a header the backend did not send");
    assert_eq!(all("date").len(), 1);
    assert_ne!(all("date"), ["never"], "the filter saw the backend's own date");
    let seen = json(resp).await;
    let headers = seen["headers"].as_object().expect("headers");
    assert_eq!(headers["x-env"], "prod");
    assert!(!headers.contains_key("x-debug"));
    assert!(headers["x-request-id"].as_str().is_some_and(|id| id.starts_with("wm-")));

    let hits = b[0].hits();
    let resp = get(&proxy.url("/locked")).await.expect("request");
    assert_eq!(resp.status(), 401);
    assert_eq!(text(resp).await, "missing or invalid API key\n");
    assert_eq!(b[0].hits(), hits, "a local 401 never reaches the upstream");
    let resp = send(Request::get(proxy.url("/locked")).header("x-api-key", "k1").body(empty()).expect("req")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn plugins_get_only_the_hooks_and_headers_they_ask_for() {
    let b = backends(1).await;
    // `stamp` only changes responses, so it asks for `on-response` alone. `auth` asks for
    // `x-api-key`, but its TOML entry lets it see `x-other` only: it never gets the key.
    let config = format!(
        "{}{}\n[[routes]]\nname = \"r\"\nservice = \"s\"\nfilters = [\"stamp\"]\nmatch = {{ path_prefix = \"/echo\" }}\n[[routes]]\nname = \"locked\"\nservice = \"s\"\nfilters = [\"auth\"]\nmatch = {{ path_prefix = \"/locked\" }}\n\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n",
        plugin_toml(
            "stamp",
            "filter",
            "header_filter.wasm",
            r#"{ request_id = false, response_set = { "x-served-by" = "wasmesh" } }"#,
            ""
        ),
        plugin_toml(
            "auth",
            "filter",
            "header_filter.wasm",
            r#"{ api_keys = ["k1"], request_id = false }"#,
            "headers = [\"x-other\"]"
        ),
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;
    for _ in 0..15 {
        let resp = get(&proxy.url("/echo")).await.expect("request");
        assert_eq!(resp.headers()["x-served-by"], "wasmesh");
    }
    let calls = |hook: &str| format!("wasmesh_plugin_calls_total{{plugin=\"stamp\",hook=\"{hook}\"}}");
    let timed = |hook: &str| format!("wasmesh_plugin_call_duration_seconds_count{{plugin=\"stamp\",hook=\"{hook}\"}}");
    assert_eq!(proxy.metric(&calls("on_response")).await, Some(15.0), "each response went through the filter");
    let sampled = proxy.metric(&timed("on_response")).await.expect("the hook's duration histogram");
    assert!((1.0..=3.0).contains(&sampled), "one call in seven is timed: {sampled} of 15");
    assert_eq!(
        proxy.metric(&calls("on_request")).await,
        Some(0.0),
        "the hook the filter did not ask for is not called"
    );

    let resp = send(Request::get(proxy.url("/locked")).header("x-api-key", "k1").body(empty()).expect("req")).await;
    assert_eq!(resp.status(), 401, "the key header was withheld from the plugin by its TOML entry");
}

#[tokio::test]
async fn misbehaving_plugins_fail_in_their_mode_within_the_deadline_and_the_proxy_keeps_serving() {
    let b = backends(1).await;
    let fault = |name: &str, mode: &str, fail: &str| {
        plugin_toml(
            name,
            "filter",
            "fault_filter.wasm",
            &format!("{{ mode = \"{mode}\", every = 2 }}"),
            &format!("fail = \"{fail}\"\ntimeout = \"20ms\"\nmemory_limit_mib = 32\n"),
        )
    };
    let mut config = String::new();
    for (name, mode, fail) in
        [("trap", "trap", "open"), ("loop", "loop", "closed"), ("alloc", "alloc", "open"), ("stdout", "stdout", "open")]
    {
        config.push_str(&fault(name, mode, fail));
        config.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nservice = \"s\"\nfilters = [\"{name}\"]\nmatch = {{ path_prefix = \"/{name}\" }}\n"
        ));
    }
    config.push_str(&format!("[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n", b[0].addr));
    let proxy = Proxy::start(&config).await;

    for name in ["trap", "loop", "alloc", "stdout"] {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let started = Instant::now();
            let resp = match get(&proxy.url(&format!("/{name}/echo"))).await {
                Ok(r) => r,
                Err(e) => panic!("{name}: {e:?}\n{}", proxy.log()),
            };
            assert!(started.elapsed() < Duration::from_secs(2), "{name}: took {:?}", started.elapsed());
            statuses.push(resp.status().as_u16());
            text(resp).await;
        }
        // Every other call misbehaves; the ones between run on a fresh instance and pass.
        let want: Vec<u16> = match name {
            "loop" => vec![200, 503, 200, 503, 200, 503],
            _ => vec![200; 6],
        };
        assert_eq!(statuses, want, "{name}");
        let failures = proxy.metric(&format!("wasmesh_plugin_failures_total{{plugin=\"{name}\"}}")).await;
        assert_eq!(failures, Some(3.0), "{name}");
    }
    assert_eq!(get(&proxy.url("/trap/")).await.expect("still serving").status(), 200);
}

fn start_fails(config: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("wasmesh.toml");
    let admin = free_port();
    std::fs::write(&path, format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n{config}")).expect("write");
    let out = std::process::Command::new(wasmesh_bin()).args(["run", "--config"]).arg(&path).output().expect("run");
    assert!(!out.status.success(), "wasmesh started with a broken plugin");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn broken_plugins_are_refused_at_load_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm garbage").expect("write");
    let cases = [
        (
            format!("[[plugins]]\nname = \"bad\"\nkind = \"filter\"\npath = \"{}\"\n", corrupt.display()),
            "plugin `bad` (filter,",
            "not a valid component",
        ),
        (
            plugin_toml("wrong", "router", "header_filter.wasm", "{}", ""),
            "plugin `wrong` (router,",
            "does not implement the `router` world",
        ),
        (
            plugin_toml("canary", "router", "canary_router.wasm", "{ percent = 5 }", ""),
            "plugin `canary` (router,",
            "init rejected the config: config: missing field `canary`",
        ),
        (
            plugin_toml("zones", "balancer", "json_health.wasm", "{}", ""),
            "plugin `zones` (balancer,",
            "does not implement the `balancer` world",
        ),
        (
            plugin_toml("zones", "balancer", "zone_balancer.wasm", "{ min_local = 1 }", ""),
            "plugin `zones` (balancer,",
            "init rejected the config: config: set `zone`, `zone_header`, or both",
        ),
        (
            plugin_toml("health", "health_check", "json_health.wasm", "{ field = \"a..b\" }", ""),
            "plugin `health` (health_check,",
            "init rejected the config: config.field: `a..b` is not a dotted path",
        ),
    ];
    for (config, who, why) in cases {
        let stderr = start_fails(&config);
        assert!(stderr.contains(who) && stderr.contains(why), "want {who:?} and {why:?} in:\n{stderr}");
    }
}

/// The backend (`b0`, `b1`, …) that answered each of `n` requests to `path` with `headers`.
async fn answered_by(proxy: &Proxy, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let mut req = Request::get(proxy.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = json(send(req.body(empty()).expect("req")).await).await;
        seen.push(body["backend"].as_str().expect("backend name").to_owned());
    }
    seen
}

#[tokio::test]
async fn a_balancer_plugin_keeps_requests_in_their_zone() {
    let b = backends(4).await;
    let zoned: Vec<String> = b
        .iter()
        .zip(["eu", "eu", "us", "us"])
        .map(|(b, zone)| format!("{{ address = \"{}\", metadata = {{ zone = \"{zone}\" }} }}", b.addr))
        .collect();
    let config = format!(
        "{}\n[[routes]]\nname = \"r\"\nservice = \"s\"\n\n[[services]]\nname = \"s\"\nbalancer = \"zones\"\nendpoints = [{}]\n",
        plugin_toml("zones", "balancer", "zone_balancer.wasm", "{ zone = \"eu\", zone_header = \"x-zone\" }", ""),
        zoned.join(", ")
    );
    let proxy = Proxy::start(&config).await;
    let home = answered_by(&proxy, "/echo", &[], 20).await;
    assert!(home.iter().all(|b| b == "b0" || b == "b1"), "the proxy's zone (eu): {home:?}");
    let us = answered_by(&proxy, "/echo", &[("x-zone", "us")], 20).await;
    assert!(us.iter().all(|b| b == "b2" || b == "b3"), "the caller's zone (us): {us:?}");

    // The plugin sees live latency: when the endpoint taking the zone's traffic slows down,
    // the traffic moves to the other one in the zone (a slow sample counts at once).
    let (busy, other) = if us.iter().filter(|b| *b == "b2").count() * 2 > us.len() { (2, 3) } else { (3, 2) };
    b[busy].set_delay(Duration::from_millis(100));
    let _ = answered_by(&proxy, "/echo", &[("x-zone", "us")], 2).await;
    let after = answered_by(&proxy, "/echo", &[("x-zone", "us")], 10).await;
    let name = format!("b{other}");
    assert!(after.iter().all(|b| *b == name), "traffic left the slow b{busy} for {name}: {after:?}");
    assert_eq!(proxy.metric("wasmesh_plugin_failures_total{plugin=\"zones\"}").await.unwrap_or(0.0), 0.0);
}

#[tokio::test]
async fn a_health_check_plugin_takes_endpoints_out_degrades_them_and_brings_them_back() {
    let b = backends(2).await;
    for backend in &b {
        backend.set_health_body(Some(r#"{"status":"UP"}"#));
    }
    let config = format!(
        "{}\n[[routes]]\nname = \"r\"\nservice = \"s\"\n\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\nhealth_check = {{ path = \"/health\", interval = \"50ms\", interval_jitter = \"10ms\", healthy_threshold = 1, unhealthy_threshold = 1, plugin = \"json\" }}\n",
        plugin_toml("json", "health_check", "json_health.wasm", "{ field = \"status\" }", ""),
        b[0].addr,
        b[1].addr
    );
    let proxy = Proxy::start(&config).await;
    let health_of = |addr: std::net::SocketAddr| {
        let url = proxy.admin_url("/api/v1/mesh/v2/health");
        async move {
            let (_, view) = call_json("GET", &url, None, None).await;
            let endpoint = view["services"]
                .as_array()?
                .iter()
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .find(|i| i["endpoint"] == addr.to_string())?;
            Some((endpoint["health"].as_str()?.to_owned(), endpoint["health_detail"].as_str().map(str::to_owned)))
        }
    };
    let wait_for = |addr, want: &'static str| {
        let health_of = &health_of;
        async move {
            eventually(Duration::from_secs(5), want, || async move { health_of(addr).await.filter(|(h, _)| h == want) })
                .await
        }
    };
    wait_for(b[1].addr, "healthy").await;

    // The body says DOWN (with a 200): the plugin takes b1 out.
    b[1].set_health_body(Some(r#"{"status":"DOWN"}"#));
    let (_, detail) = wait_for(b[1].addr, "unhealthy").await;
    assert_eq!(detail.as_deref(), Some("status is \"DOWN\""));
    assert!(answered_by(&proxy, "/echo", &[], 10).await.iter().all(|b| b == "b0"));

    // Degraded: it serves only while no healthy endpoint is left.
    b[1].set_health_body(Some(r#"{"status":"degraded"}"#));
    wait_for(b[1].addr, "degraded").await;
    assert!(answered_by(&proxy, "/echo", &[], 10).await.iter().all(|b| b == "b0"), "a healthy endpoint is preferred");
    b[0].set_health_body(Some("not json"));
    let (_, detail) = wait_for(b[0].addr, "unhealthy").await;
    assert!(detail.is_some_and(|d| d.contains("body is not JSON")));
    assert!(answered_by(&proxy, "/echo", &[], 10).await.iter().all(|b| b == "b1"), "the degraded one serves");

    // Both back.
    b[0].set_health_body(Some(r#"{"status":"UP"}"#));
    b[1].set_health_body(Some(r#"{"status":"ok"}"#));
    wait_for(b[0].addr, "healthy").await;
    wait_for(b[1].addr, "healthy").await;
    let both = answered_by(&proxy, "/echo", &[], 10).await;
    assert!(both.contains(&"b0".into()) && both.contains(&"b1".into()), "{both:?}");
}
