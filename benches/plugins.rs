//! Cost of one plugin hook call as the proxy makes it, on warm instances, including the host's
//! marshalling (packing the head, passing the headers the plugin declared) and lifting the
//! decision: a router on a request with 5 headers, a filter on a request with 10 headers, and
//! the filter's response hook; and the floor under them all, a hook that reads nothing and
//! decides nothing (a filter configured to change nothing, passed no headers, answering
//! `proceed`): what entering the sandbox costs at all. Needs `plugins/build.sh` first.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use wasmesh::config::PluginConfig;
use wasmesh::plugin::{self, Plugin, PluginCounters, RequestView, ResponseView};
use wasmesh::telemetry::metrics::PluginMetricFamilies;

fn load(name: &str, kind: &str, file: &str, config: &str) -> Plugin {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/target/wasm32-wasip2/release").join(file);
    assert!(path.exists(), "{} missing: run plugins/build.sh", path.display());
    let toml = format!("name = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\nconfig = {config}\n", path.display());
    let cfg: PluginConfig = toml::from_str(&toml).expect("plugin config");
    plugin::load(
        &cfg,
        &std::fs::read(&cfg.path).expect("plugin file"),
        &PluginMetricFamilies::default(),
        PluginCounters::default(),
    )
    .expect("plugin loads")
}

/// A request's headers: `count` of them, the router's two among the first five.
fn headers(count: usize) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut list = vec![
        ("host", "api.example.com".to_owned()),
        ("user-agent", "bench/1.0".to_owned()),
        ("accept", "*/*".to_owned()),
        ("x-user", "user-42".to_owned()),
        ("x-canary", "0".to_owned()),
    ];
    let extra: Vec<String> = (list.len()..count).map(|i| format!("x-extra-{i}")).collect();
    list.extend(extra.iter().map(|name| (name.as_str(), "some header value".to_owned())));
    for (name, value) in list.into_iter().take(count) {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(&value).expect("value"),
        );
    }
    map
}

fn view(headers: &HeaderMap) -> RequestView<'_> {
    RequestView {
        method: "GET",
        authority: "api.example.com",
        path: "/v1/items?id=42",
        client_addr: "127.0.0.1:50000",
        headers,
    }
}

fn bench(c: &mut Criterion) {
    let Plugin::Router(router) = load(
        "canary",
        "router",
        "canary_router.wasm",
        "{ canary = \"v2\", header = \"x-canary\", value = \"1\", percent = 10, sticky_header = \"x-user\" }",
    ) else {
        panic!("a router")
    };
    let Plugin::Filter(filter) = load(
        "headers",
        "filter",
        "header_filter.wasm",
        "{ request_set = { \"x-env\" = \"prod\" }, response_set = { \"x-served-by\" = \"wasmesh\" } }",
    ) else {
        panic!("a filter")
    };
    let mut group = c.benchmark_group("plugin_call");
    let five = headers(5);
    group.bench_function("router_5_headers", |b| {
        b.iter(|| router.route(std::hint::black_box(&view(&five))).expect("call"))
    });
    let ten = headers(10);
    group.bench_function("filter_10_headers", |b| {
        b.iter(|| filter.on_request(std::hint::black_box(&view(&ten))).expect("call"))
    });
    let mut response_headers = HeaderMap::new();
    response_headers.insert("content-type", HeaderValue::from_static("text/plain"));
    response_headers.insert("content-length", HeaderValue::from_static("100"));
    let response = ResponseView { status: 200, raw: None, headers: &response_headers };
    group.bench_function("filter_response_hook", |b| {
        b.iter(|| filter.on_response(std::hint::black_box(&view(&ten)), &response).expect("call"))
    });
    let Plugin::Filter(noop) = load("noop", "filter", "header_filter.wasm", "{ request_id = false }") else {
        panic!("a filter")
    };
    group.bench_function("filter_noop_floor", |b| {
        b.iter(|| noop.on_request(std::hint::black_box(&view(&ten))).expect("call"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
