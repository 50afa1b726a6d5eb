//! wasmesh: a service-mesh data plane programmed with WebAssembly components.
//!
//! A request flows listener → routing → balancing → upstream pool → response, reading one
//! immutable [`snapshot::Snapshot`] that a reload swaps whole. See the README's architecture
//! section for the map of modules.

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
pub mod listener;
pub mod listener_set;
pub mod mesh;
pub mod message;
pub mod plugin;
pub mod registry;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub use wasmesh_telemetry as telemetry;
pub mod tls;
pub mod upstream;
