//! Cost of one pick for each balancing algorithm over 10 weighted endpoints.

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmesh::config::BalancePolicy;
use wasmesh::upstream::Endpoint;
use wasmesh::upstream::balance::{self, PickContext};

fn bench(c: &mut Criterion) {
    let endpoints: Vec<Endpoint> = (0..10u16)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", 9000 + i).parse().expect("addr");
            Endpoint::standalone(addr, 1 + u32::from(i % 3))
        })
        .collect();
    let mut group = c.benchmark_group("balancer_pick_10_endpoints");
    for (name, policy) in [
        ("round_robin", BalancePolicy::RoundRobin),
        ("random", BalancePolicy::Random),
        ("least_request", BalancePolicy::LeastRequest),
        ("peak_ewma", BalancePolicy::PeakEwma),
        ("ring_hash", BalancePolicy::RingHash),
    ] {
        let balancer = balance::build(policy, &endpoints);
        let mut key = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let ctx = PickContext { hash: Some(key), now: Instant::now() };
                std::hint::black_box(balancer.pick(&ctx, &endpoints, &|_| true))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
