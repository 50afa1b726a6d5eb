//! Cost of one plugin hook call, including the host's marshalling, on warm instances:
//! a router on a request with 5 headers and a filter on a request with 10 headers, all passed,
//! and the filter given only the headers it declared, as the proxy passes them.
//! Needs `plugins/build.sh` first.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmesh::config::PluginConfig;
use wasmesh::plugin::{self, Plugin, PluginCounters, PluginMetricFamilies, types};

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

fn head(headers: usize) -> types::RequestHead {
    let mut list = vec![
        ("host".to_owned(), b"api.example.com".to_vec()),
        ("user-agent".to_owned(), b"bench/1.0".to_vec()),
        ("accept".to_owned(), b"*/*".to_vec()),
        ("x-user".to_owned(), b"user-42".to_vec()),
        ("x-canary".to_owned(), b"0".to_vec()),
    ];
    for i in list.len()..headers {
        list.push((format!("x-extra-{i}"), b"some header value".to_vec()));
    }
    list.truncate(headers);
    types::RequestHead {
        method: "GET".into(),
        authority: "api.example.com".into(),
        path: "/v1/items?id=42".into(),
        client_addr: "127.0.0.1:50000".into(),
        headers: list,
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
    let Plugin::Filter(filter) =
        load("headers", "filter", "header_filter.wasm", "{ request_set = { \"x-env\" = \"prod\" } }")
    else {
        panic!("a filter")
    };
    let mut group = c.benchmark_group("plugin_call");
    let five = head(5);
    group.bench_function("router_5_headers", |b| b.iter(|| router.route(std::hint::black_box(&five)).expect("call")));
    let ten = head(10);
    group.bench_function("filter_10_headers", |b| {
        b.iter(|| filter.on_request(std::hint::black_box(&ten)).expect("call"))
    });
    // As the proxy calls it: only the headers the plugin declared at init (here 1 of 10).
    let mut declared = head(10);
    declared.headers.retain(|(name, _)| filter.reads_header(name));
    group.bench_function("filter_10_headers_declared_only", |b| {
        b.iter(|| filter.on_request(std::hint::black_box(&declared)).expect("call"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
