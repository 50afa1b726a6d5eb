//! Route matching cost: the first-match scan over a realistic table, for a request that
//! matches early, one that matches last, and one that matches nothing.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use wasmesh::mesh::Mesh;
use wasmesh::routing::MatchInput;

fn config(routes: usize) -> String {
    let mut toml = String::from("[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n\n");
    for i in 0..routes {
        toml.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nservice = \"s\"\nmatch = {{ host = \"api{i}.example.com\", path_prefix = \"/v{i}/items\", methods = [\"GET\", \"POST\"], headers = [{{ name = \"x-tenant\", value = \"t{i}\" }}] }}\n"
        ));
    }
    toml.push_str("[[services]]\nname = \"s\"\nendpoints = [{ address = \"127.0.0.1:2\" }]\n");
    toml
}

fn bench(c: &mut Criterion) {
    let cfg = wasmesh::config::parse(Path::new("bench.toml"), &config(20)).expect("valid config");
    let mesh = Mesh::new(cfg).expect("no plugins to load");
    let snap = mesh.snapshot();
    let (_, table) = snap.listener("l").expect("listener");
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    let mut group = c.benchmark_group("route_match_20_routes");
    for (name, host, path, tenant) in [
        ("first", "api0.example.com", "/v0/items/42", "t0"),
        ("last", "api19.example.com", "/v19/items/42", "t19"),
        ("none", "other.example.com", "/nothing", "t0"),
    ] {
        let mut h = headers.clone();
        h.insert("x-tenant", HeaderValue::from_str(tenant).expect("value"));
        group.bench_function(name, |b| {
            b.iter(|| {
                let view = MatchInput { host, path, method: &Method::GET, headers: &h };
                std::hint::black_box(table.find(std::hint::black_box(&view)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
