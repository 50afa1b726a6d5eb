//! Host bindings generated from `wit/plugin.wit`, one module per world. The other worlds
//! reuse the router world's `types`, `log` and `metrics`, so the host implements each once.
//!
//! Generated code carries the WIT documentation, not Rust doc comments on every item.
#![allow(missing_docs)]

/// The `router` world.
pub mod router {
    wasmtime::component::bindgen!({ world: "router", path: "../../wit" });
}

/// The `filter` world.
pub mod filter {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../../wit",
        with: {
            "wasmesh:plugin/types": super::router::wasmesh::plugin::types,
            "wasmesh:plugin/log": super::router::wasmesh::plugin::log,
            "wasmesh:plugin/metrics": super::router::wasmesh::plugin::metrics,
        },
    });
}

/// The `balancer` world.
pub mod balancer {
    wasmtime::component::bindgen!({
        world: "balancer",
        path: "../../wit",
        with: {
            "wasmesh:plugin/types": super::router::wasmesh::plugin::types,
            "wasmesh:plugin/log": super::router::wasmesh::plugin::log,
            "wasmesh:plugin/metrics": super::router::wasmesh::plugin::metrics,
        },
    });
}

/// The `health-check` world.
pub mod health_check {
    wasmtime::component::bindgen!({
        world: "health-check",
        path: "../../wit",
        with: {
            "wasmesh:plugin/types": super::router::wasmesh::plugin::types,
            "wasmesh:plugin/log": super::router::wasmesh::plugin::log,
            "wasmesh:plugin/metrics": super::router::wasmesh::plugin::metrics,
        },
    });
}

pub use router::wasmesh::plugin::types;
