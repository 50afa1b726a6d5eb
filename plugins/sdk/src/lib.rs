//! The wasmesh plugin SDK: bindings for each plugin world of `wit/plugin.wit`, an export
//! macro per world, and small helpers for headers and decisions.
//!
//! A router plugin is:
//! ```ignore
//! use wasmesh_plugin_sdk::router::{self, Guest, Interest, RequestHead, RouteDecision};
//! struct Mine;
//! impl Guest for Mine { fn route(req: RequestHead) -> RouteDecision { RouteDecision::Default } }
//! impl wasmesh_plugin_sdk::router::exports::wasmesh::plugin::lifecycle::Guest for Mine {
//!     // The headers this plugin reads: the host passes no others.
//!     fn init(_config: String) -> Result<Interest, String> { Ok(Interest::headers(["x-canary"])) }
//! }
//! wasmesh_plugin_sdk::router::export_router!(Mine with_types_in wasmesh_plugin_sdk::router);
//! ```

/// Constructors of `Interest` (what `init` returns) in one world's bindings.
macro_rules! interest_helpers {
    () => {
        pub use wasmesh::plugin::types::{Hooks, Interest};

        impl Interest {
            /// Only the headers in `names` (lower-case), every hook. The cheapest plugins
            /// name few headers: each one passed costs time on every call.
            pub fn headers<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
                Self { headers: Some(names.into_iter().map(Into::into).collect()), hooks: Hooks::all() }
            }

            /// Every header and every hook.
            pub fn everything() -> Self {
                Self { headers: None, hooks: Hooks::all() }
            }

            /// Only the filter hooks in `hooks`: the host skips the others.
            pub fn hooks(self, hooks: Hooks) -> Self {
                Self { hooks, ..self }
            }
        }
    };
}

/// Bindings of the `router` world (feature `router`). One world per plugin: the worlds share
/// the lifecycle export, whose generated glue may exist once per component.
#[cfg(feature = "router")]
#[allow(clippy::too_many_arguments)]
pub mod router {
    wit_bindgen::generate!({
        world: "router",
        path: "../../wit",
        default_bindings_module: "wasmesh_plugin_sdk::router",
        pub_export_macro: true,
        export_macro_name: "export_router",
    });
    interest_helpers!();
}

/// Bindings of the `filter` world (feature `filter`).
#[cfg(feature = "filter")]
#[allow(clippy::too_many_arguments)]
pub mod filter {
    wit_bindgen::generate!({
        world: "filter",
        path: "../../wit",
        default_bindings_module: "wasmesh_plugin_sdk::filter",
        pub_export_macro: true,
        export_macro_name: "export_filter",
    });
    interest_helpers!();
}

/// Bindings of the `balancer` world (feature `balancer`).
#[cfg(feature = "balancer")]
#[allow(clippy::too_many_arguments)]
pub mod balancer {
    wit_bindgen::generate!({
        world: "balancer",
        path: "../../wit",
        default_bindings_module: "wasmesh_plugin_sdk::balancer",
        pub_export_macro: true,
        export_macro_name: "export_balancer",
    });
    interest_helpers!();
}

/// Bindings of the `health-check` world (feature `health-check`).
#[cfg(feature = "health-check")]
#[allow(clippy::too_many_arguments)]
pub mod health_check {
    wit_bindgen::generate!({
        world: "health-check",
        path: "../../wit",
        default_bindings_module: "wasmesh_plugin_sdk::health_check",
        pub_export_macro: true,
        export_macro_name: "export_health_check",
    });
    interest_helpers!();
}

/// Sends panic messages to the host's log (plugins have no stdio) instead of stderr. Call it
/// first thing in `init`.
pub fn init_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        #[cfg(feature = "router")]
        router::wasmesh::plugin::log::log(router::wasmesh::plugin::log::Level::Error, &message);
        #[cfg(feature = "filter")]
        filter::wasmesh::plugin::log::log(filter::wasmesh::plugin::log::Level::Error, &message);
        #[cfg(feature = "balancer")]
        balancer::wasmesh::plugin::log::log(balancer::wasmesh::plugin::log::Level::Error, &message);
        #[cfg(feature = "health-check")]
        health_check::wasmesh::plugin::log::log(health_check::wasmesh::plugin::log::Level::Error, &message);
        let _ = message;
    }));
}

/// The value of header `name` (lower-case) in `headers`, if present and UTF-8.
pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A stable 64-bit FNV-1a hash, for sticky percentage splits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
