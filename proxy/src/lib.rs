//! wasmesh: a service-mesh data plane programmed with WebAssembly components.
//!
//! A request flows listener → routing → plugins → balancing → upstream pool → response,
//! reading one immutable [`snapshot::Snapshot`] that a reload swaps whole. This crate is the
//! data plane, the admin API and the binary; the concerns below it are crates of their own,
//! re-exported here by name: [`config`], [`telemetry`] (with [`clock`]), [`plugin`] (the
//! wasmtime host), and `wasmesh_http1` (HTTP/1.1 on the wire). `docs/architecture.md` has the
//! map of crates and modules.

#![deny(missing_docs)]

pub mod admin;
pub mod body;
pub use wasmesh_config as config;
pub use wasmesh_telemetry::clock;
pub mod contract;
pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod listener;
pub mod listener_set;
pub mod mesh;
pub mod message;
pub use wasmesh_plugin_host as plugin;
pub mod registry;
pub mod reload;
pub mod routing;
pub mod send;
pub mod server;
pub mod snapshot;
pub use wasmesh_telemetry as telemetry;
pub mod tls;
pub mod upstream;
