//! The wasmesh plugin SDK: a plugin is a Rust type that implements the trait of one world of
//! `wit/plugin.wit` (`Router`, `Filter`, `Balancer` or `HealthCheck`, each behind the
//! feature of that name: `router`, `filter`, `balancer`, `health-check`), exported with
//! `export!`.
//!
//! The SDK does the rest. At `init` it routes panics to the host's log, parses the plugin's TOML
//! `config` table (handed over as JSON) into the trait's `Config` type (a config that does not
//! parse rejects the load with serde's reason, e.g. ``config: missing field `canary` ``), builds
//! the plugin with its `new`, keeps it, and answers the plugin's `interest`. Each hook then gets the
//! plugin as `&mut self` and the request or response head read in place ([`Request`],
//! [`Response`]); header and path changes go back packed, written by [`Changes`].
//!
//! A filter that answers 405 to one method (config: `{ method = "DELETE" }`); each world trait's
//! documentation has a complete example of its own:
//! ```ignore
//! use wasmesh_plugin_sdk::{Filter, FilterAction, Hooks, Interest, LocalResponse, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Deny {
//!     method: String,
//! }
//!
//! impl Filter for Deny {
//!     type Config = Self;
//!
//!     fn new(config: Self) -> Result<Self, String> {
//!         Ok(config)
//!     }
//!
//!     // The method comes without asking: no headers, and the request hook only.
//!     fn interest(&self) -> Interest {
//!         Interest::no_headers().hooks(Hooks::ON_REQUEST)
//!     }
//!
//!     fn on_request(&mut self, req: &Request) -> FilterAction {
//!         if req.method() != self.method {
//!             return FilterAction::Proceed;
//!         }
//!         FilterAction::Respond(LocalResponse { status: 405, headers: vec![], body: b"no\n".to_vec() })
//!     }
//! }
//!
//! wasmesh_plugin_sdk::export!(Deny);
//! ```
//!
//! A plugin's value is per instance: the proxy keeps several warm instances of a plugin (and
//! replaces one after a trap), each built by `new` from the same config, so state kept in `self`
//! (a counter, a cache) is the instance's, not shared.
#![warn(missing_docs)]

pub mod alloc;
#[cfg(world)]
#[doc(hidden)]
pub mod export;
mod head;

pub use head::{Changes, Headers, Request, Response};
#[cfg(world)]
use serde::de::DeserializeOwned;

include!(concat!(env!("OUT_DIR"), "/wit_package.rs"));

/// Plugins are single-threaded components: the size-class allocator needs no locking.
#[cfg(all(feature = "allocator", target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new(std::alloc::System);

/// Generates the bindings of world `$world` in module `$module`: their own exports carry a
/// prefix that leaves them out of the component, because [`export!`] exports `init` and the
/// hooks itself (see `export.rs`).
macro_rules! bindings {
    ($(#[$doc:meta])* $module:ident, $world:literal, $path:literal, $macro:literal) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments, missing_docs)]
        pub mod $module {
            wit_bindgen::generate!({
                world: $world,
                path: "../../wit",
                default_bindings_module: $path,
                pub_export_macro: true,
                export_prefix: "wasmesh-sdk-unlifted:",
                export_macro_name: $macro,
            });
        }
    };
}

bindings!(
    /// The generated bindings of the `router` world (feature `router`).
    #[cfg(feature = "router")]
    router, "router", "wasmesh_plugin_sdk::router", "__export_router_bindings"
);
bindings!(
    /// The generated bindings of the `filter` world (feature `filter`).
    #[cfg(feature = "filter")]
    filter, "filter", "wasmesh_plugin_sdk::filter", "__export_filter_bindings"
);
bindings!(
    /// The generated bindings of the `balancer` world (feature `balancer`).
    #[cfg(feature = "balancer")]
    balancer, "balancer", "wasmesh_plugin_sdk::balancer", "__export_balancer_bindings"
);
bindings!(
    /// The generated bindings of the `health-check` world (feature `health-check`).
    #[cfg(feature = "health-check")]
    health_check, "health-check", "wasmesh_plugin_sdk::health_check", "__export_health_check_bindings"
);

// The bindings of the world enabled: one per plugin, because every world exports the same
// `lifecycle` interface, whose generated glue a component holds once.
#[cfg(feature = "balancer")]
use balancer as world;
#[cfg(feature = "filter")]
use filter as world;
#[cfg(feature = "health-check")]
use health_check as world;
#[cfg(feature = "router")]
use router as world;

/// Structured logging under the plugin's name: `log::log(log::Level::Info, "...")`.
#[cfg(world)]
pub use world::wasmesh::plugin::log;
/// Metrics under the plugin's name: `metrics::counter_add("name", 1)`, `histogram_record`.
#[cfg(world)]
pub use world::wasmesh::plugin::metrics;
#[cfg(world)]
pub use world::wasmesh::plugin::types::{Hooks, Interest};

#[cfg(feature = "router")]
pub use router::{
    RouteDecision,
    wasmesh::plugin::types::{LocalResponse, UpstreamChoice},
};

#[cfg(feature = "filter")]
pub use filter::{FilterAction, wasmesh::plugin::types::LocalResponse};

#[cfg(feature = "balancer")]
pub use balancer::Endpoint;

#[cfg(feature = "health-check")]
pub use health_check::{Endpoint, Health, ProbeResponse};

#[cfg(world)]
impl Interest {
    /// Only the headers in `names` (lower-case), every hook. The cheapest plugins name few
    /// headers: each one passed costs time on every call.
    pub fn headers<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Self { headers: Some(names.into_iter().map(Into::into).collect()), hooks: Hooks::all() }
    }

    /// No headers (method, authority, path and client address come anyway), every hook.
    pub fn no_headers() -> Self {
        Self { headers: Some(Vec::new()), hooks: Hooks::all() }
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

/// A router (feature `router`; TOML `kind = "router"`, named by a route's `router`): sends each
/// request of its routes to the route's service, another service, or answers it.
///
/// ```
/// use wasmesh_plugin_sdk::{Interest, NoConfig, Request, RouteDecision, Router, UpstreamChoice};
///
/// /// Sends `/v2/` to the `api-v2` service.
/// struct V2;
///
/// impl Router for V2 {
///     type Config = NoConfig;
///
///     fn new(_: NoConfig) -> Result<Self, String> {
///         Ok(V2)
///     }
///
///     fn interest(&self) -> Interest {
///         Interest::no_headers()
///     }
///
///     fn route(&mut self, req: &Request) -> RouteDecision {
///         if !req.path().starts_with("/v2/") {
///             return RouteDecision::Default;
///         }
///         RouteDecision::Upstream(UpstreamChoice { service: "api-v2".into(), mutations: None })
///     }
/// }
///
/// wasmesh_plugin_sdk::export!(V2);
/// ```
#[cfg(feature = "router")]
pub trait Router: Sized {
    /// The plugin's TOML `config` table, parsed at `init` ([`NoConfig`] for a plugin without).
    type Config: DeserializeOwned;

    /// Builds the plugin from its config, once per instance. An `Err` rejects the load with
    /// its message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The headers [`route`](Self::route) reads, asked once after [`new`](Self::new): the host
    /// passes no others.
    fn interest(&self) -> Interest;

    /// Where `req` goes: [`RouteDecision::Default`] (the route's own service), another service
    /// ([`RouteDecision::Upstream`], with header or path changes) or a local answer.
    fn route(&mut self, req: &Request) -> RouteDecision;
}

/// A filter (feature `filter`; TOML `kind = "filter"`, named in a route's `filters`): proceeds
/// with, changes or answers each request, and proceeds with or changes each response.
///
/// Declare in [`interest`](Self::interest) the hooks implemented (`.hooks(Hooks::ON_REQUEST)`):
/// the host skips the others, where a hook left to its default still costs a call.
///
/// ```
/// use wasmesh_plugin_sdk::{Filter, FilterAction, Hooks, Interest, LocalResponse, Request};
///
/// /// Answers 405 to one method (config: `{ method = "DELETE" }`).
/// #[derive(serde::Deserialize)]
/// struct Deny {
///     method: String,
/// }
///
/// impl Filter for Deny {
///     type Config = Self;
///
///     fn new(config: Self) -> Result<Self, String> {
///         Ok(config)
///     }
///
///     // The method comes without asking: no headers, and the request hook only.
///     fn interest(&self) -> Interest {
///         Interest::no_headers().hooks(Hooks::ON_REQUEST)
///     }
///
///     fn on_request(&mut self, req: &Request) -> FilterAction {
///         if req.method() != self.method {
///             return FilterAction::Proceed;
///         }
///         FilterAction::Respond(LocalResponse { status: 405, headers: vec![], body: b"no\n".to_vec() })
///     }
/// }
///
/// wasmesh_plugin_sdk::export!(Deny);
/// ```
#[cfg(feature = "filter")]
pub trait Filter: Sized {
    /// The plugin's TOML `config` table, parsed at `init` ([`NoConfig`] for a plugin without).
    type Config: DeserializeOwned;

    /// Builds the plugin from its config, once per instance. An `Err` rejects the load with
    /// its message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The headers the hooks read and the hooks to call, asked once after [`new`](Self::new):
    /// the host passes no other header and calls no other hook.
    fn interest(&self) -> Interest;

    /// Before the request goes upstream: [`FilterAction::Proceed`], `Mutate` (header and path
    /// changes) or `Respond` (a local answer, e.g. 401). Proceeds unless implemented.
    fn on_request(&mut self, req: &Request) -> FilterAction {
        let _ = req;
        FilterAction::Proceed
    }

    /// Before the response goes downstream (`resp.request()` is the request it answers):
    /// `Proceed` or `Mutate`. Proceeds unless implemented.
    fn on_response(&mut self, resp: &Response) -> FilterAction {
        let _ = resp;
        FilterAction::Proceed
    }
}

/// A balancer (feature `balancer`; TOML `kind = "balancer"`, named by a service's `balancer`):
/// picks the endpoint for each request to the service.
///
/// ```
/// use wasmesh_plugin_sdk::{Balancer, Endpoint, Interest, NoConfig, Request};
///
/// /// The healthy endpoint with the fewest requests in flight.
/// struct LeastBusy;
///
/// impl Balancer for LeastBusy {
///     type Config = NoConfig;
///
///     fn new(_: NoConfig) -> Result<Self, String> {
///         Ok(LeastBusy)
///     }
///
///     fn interest(&self) -> Interest {
///         Interest::no_headers()
///     }
///
///     fn pick(&mut self, _req: &Request, candidates: &[Endpoint]) -> Option<u32> {
///         let healthy = candidates.iter().enumerate().filter(|(_, e)| e.healthy);
///         healthy.min_by_key(|(_, e)| e.in_flight).map(|(i, _)| i as u32)
///     }
/// }
///
/// wasmesh_plugin_sdk::export!(LeastBusy);
/// ```
#[cfg(feature = "balancer")]
pub trait Balancer: Sized {
    /// The plugin's TOML `config` table, parsed at `init` ([`NoConfig`] for a plugin without).
    type Config: DeserializeOwned;

    /// Builds the plugin from its config, once per instance. An `Err` rejects the load with
    /// its message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The headers [`pick`](Self::pick) reads, asked once after [`new`](Self::new): the host
    /// passes no others.
    fn interest(&self) -> Interest;

    /// The index in `candidates` (the endpoints the proxy would route to, with their load,
    /// latency, weight, health and metadata) of the one to use, or `None` to leave the choice
    /// to the service's `balance` policy.
    fn pick(&mut self, req: &Request, candidates: &[Endpoint]) -> Option<u32>;
}

/// A health check (feature `health-check`; TOML `kind = "health_check"`, named by a service's
/// `health_check.plugin`): judges each endpoint from its health probe's response.
///
/// ```
/// use wasmesh_plugin_sdk::{Endpoint, Health, HealthCheck, Interest, ProbeResponse};
///
/// /// Healthy when the body holds a word (config: `{ word = "ready" }`).
/// #[derive(serde::Deserialize)]
/// struct Says {
///     word: String,
/// }
///
/// impl HealthCheck for Says {
///     type Config = Self;
///
///     fn new(config: Self) -> Result<Self, String> {
///         Ok(config)
///     }
///
///     fn interest(&self) -> Interest {
///         Interest::no_headers()
///     }
///
///     fn judge(&mut self, _target: &Endpoint, probe: &ProbeResponse) -> Health {
///         if String::from_utf8_lossy(&probe.body).contains(&self.word) {
///             return Health::Healthy;
///         }
///         Health::Unhealthy(format!("status {}: no `{}` in the body", probe.status, self.word))
///     }
/// }
///
/// wasmesh_plugin_sdk::export!(Says);
/// ```
#[cfg(feature = "health-check")]
pub trait HealthCheck: Sized {
    /// The plugin's TOML `config` table, parsed at `init` ([`NoConfig`] for a plugin without).
    type Config: DeserializeOwned;

    /// Builds the plugin from its config, once per instance. An `Err` rejects the load with
    /// its message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The probe response headers [`judge`](Self::judge) reads, asked once after
    /// [`new`](Self::new): the host passes no others ([`Interest::no_headers`] when the body is
    /// enough).
    fn interest(&self) -> Interest;

    /// The verdict on `target` from `probe` (its status, headers and first `max_body_bytes` of
    /// body): healthy, degraded (keeps serving while no healthy endpoint is routable) or
    /// unhealthy, with the reason.
    fn judge(&mut self, target: &Endpoint, probe: &ProbeResponse) -> Health;
}

/// The `Config` of a plugin that takes none: an empty `config` table (the default). A table
/// with any setting is refused, so that a misspelt setting does not go unnoticed.
#[cfg(world)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// The value of header `name` (lower-case) in a header list (a probe's, for instance), if
/// present and UTF-8.
pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A stable 64-bit FNV-1a hash, for sticky percentage splits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_follow_the_wit_package() {
        let (name, version) = WIT_PACKAGE.split_once('@').expect("a versioned package");
        assert_eq!(__wit_interface!(lifecycle), format!("{name}/lifecycle@{version}"));
        assert!(include_str!("../../../wit/plugin.wit").contains(&format!("\npackage {WIT_PACKAGE};\n")));
    }

    #[cfg(world)]
    #[test]
    fn no_config_is_an_empty_table() {
        assert_eq!(serde_json::from_str::<NoConfig>("{}").ok(), Some(NoConfig {}));
        let err = serde_json::from_str::<NoConfig>(r#"{"mode":"x"}"#).expect_err("a setting");
        assert!(err.to_string().contains("unknown field `mode`"), "{err}");
    }
}
