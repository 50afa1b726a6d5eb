//! The wasmesh plugin SDK: bindings for each plugin world of `wit/plugin.wit`, an export
//! macro per world, and small helpers for headers and decisions.
//!
//! Request and response heads arrive packed in one buffer each (see `request-head` in the WIT);
//! [`Request`] and [`Response`] read them in place. Header and path changes go back packed
//! too, written by [`Changes`]. A router plugin is:
//! ```ignore
//! use wasmesh_plugin_sdk::Request;
//! use wasmesh_plugin_sdk::router::{self, Guest, Interest, RequestHead, RouteDecision};
//! struct Mine;
//! impl Guest for Mine {
//!     fn route(req: RequestHead) -> RouteDecision {
//!         let req = Request::new(req);
//!         if req.header("x-canary") == Some("1") { /* ... */ }
//!         RouteDecision::Default
//!     }
//! }
//! impl wasmesh_plugin_sdk::router::exports::wasmesh::plugin::lifecycle::Guest for Mine {
//!     // The headers this plugin reads: the host passes no others.
//!     fn init(_config: String) -> Result<Interest, String> { Ok(Interest::headers(["x-canary"])) }
//! }
//! wasmesh_plugin_sdk::router::export_router!(Mine with_types_in wasmesh_plugin_sdk::router);
//! ```

pub mod alloc;
mod head;

pub use head::{Changes, Headers, Request, Response};

include!(concat!(env!("OUT_DIR"), "/wit_package.rs"));

/// Plugins are single-threaded components: the size-class allocator needs no locking.
#[cfg(all(feature = "allocator", target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new(std::alloc::System);

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
        // The generated exports carry this prefix, which leaves them out of the component:
        // `export_router!` exports the hook and `init` under their own names (see `deferred`).
        export_prefix: "wasmesh-sdk-unlifted:",
        export_macro_name: "__export_router_bindings",
    });
    interest_helpers!();

    /// Exports `$ty` as the plugin's router and lifecycle (`impl Guest` for both).
    #[doc(inline)]
    pub use crate::__export_router as export_router;
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
        // As in `router`.
        export_prefix: "wasmesh-sdk-unlifted:",
        export_macro_name: "__export_filter_bindings",
    });
    interest_helpers!();

    /// Exports `$ty` as the plugin's filter and lifecycle (`impl Guest` for both).
    #[doc(inline)]
    pub use crate::__export_filter as export_filter;
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

/// Hook results freed when the next hook is called instead of by a `post-return` export.
///
/// A hook's decision (its header changes, a local response) stays in the plugin's memory until
/// the host has read it; the canonical ABI frees it with a `post-return` function the host
/// calls right after, which is one more entry into the sandbox per call: about as costly as
/// the hook's own work (callgrind, ~360 instructions each on the proxy's side). The router and
/// filter exports of this SDK have no `post-return`: each hook call first frees the decision
/// of the call before it, whose return area no other call has written since (calls into an
/// instance are one at a time, and a trapped instance is never called again). `init` keeps
/// its ordinary `post-return`: it runs once per instance.
#[doc(hidden)]
pub mod deferred {
    use std::cell::Cell;

    /// The cleanup of the last hook's result, and that result.
    type Pending = Option<(unsafe fn(*mut u8), *mut u8)>;

    struct Slot(Cell<Pending>);
    // SAFETY: components are single-threaded; nothing else touches the slot.
    unsafe impl Sync for Slot {}

    static PENDING: Slot = Slot(Cell::new(None));

    /// Frees the previous hook's result, runs `hook` (a generated `_export_*_cabi`), and
    /// keeps what frees its result for the next call.
    ///
    /// # Safety
    /// `cleanup` must be the generated `__post_return_*` of the function `hook` calls.
    pub unsafe fn call(hook: impl FnOnce() -> *mut u8, cleanup: unsafe fn(*mut u8)) -> *mut u8 {
        if let Some((free, result)) = PENDING.0.take() {
            // SAFETY: `result` is the previous hook's return area, untouched since it returned.
            unsafe { free(result) };
        }
        let result = hook();
        PENDING.0.set(Some((cleanup, result)));
        result
    }
}

/// Exports world module `$world` for `$ty`: the world's type information for the component
/// (from the generated `$bindings` macro, whose own exports are prefixed out), `init` with its
/// `post-return`, and each hook (export name, generated lifting and cleanup functions) without
/// one (see [`deferred`]). Every hook takes one packed buffer.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    ($ty:ident, $world:ident, $bindings:ident, $(($name:literal, $cabi:ident, $post:ident)),+) => {
        $crate::$world::$bindings!($ty with_types_in $crate::$world);
        const _: () = {
            #[unsafe(export_name = concat!($crate::__wit_interface!(lifecycle), "#init"))]
            unsafe extern "C" fn init(arg0: *mut u8, arg1: usize) -> *mut u8 {
                unsafe { $crate::$world::exports::wasmesh::plugin::lifecycle::_export_init_cabi::<$ty>(arg0, arg1) }
            }
            #[unsafe(export_name = concat!("cabi_post_", $crate::__wit_interface!(lifecycle), "#init"))]
            unsafe extern "C" fn init_post_return(arg0: *mut u8) {
                unsafe { $crate::$world::exports::wasmesh::plugin::lifecycle::__post_return_init::<$ty>(arg0) }
            }
        };
        $(
            const _: () = {
                #[unsafe(export_name = $name)]
                unsafe extern "C" fn hook(arg0: *mut u8, arg1: usize) -> *mut u8 {
                    unsafe {
                        $crate::deferred::call(|| $crate::$world::$cabi::<$ty>(arg0, arg1), $crate::$world::$post::<$ty>)
                    }
                }
            };
        )+
    };
}

/// Exports a router: `export_router!(Mine)` (`with_types_in ...` is accepted and ignored).
#[cfg(feature = "router")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_router {
    ($ty:ident $(with_types_in $($path:tt)*)?) => {
        $crate::__export_world!(
            $ty,
            router,
            __export_router_bindings,
            ("route", _export_route_cabi, __post_return_route)
        );
    };
}

/// Exports a filter: `export_filter!(Mine)` (`with_types_in ...` is accepted and ignored).
#[cfg(feature = "filter")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_filter {
    ($ty:ident $(with_types_in $($path:tt)*)?) => {
        $crate::__export_world!(
            $ty,
            filter,
            __export_filter_bindings,
            ("on-request", _export_on_request_cabi, __post_return_on_request),
            ("on-response", _export_on_response_cabi, __post_return_on_response)
        );
    };
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

    #[test]
    fn a_hook_result_is_freed_when_the_next_hook_starts_and_not_before() {
        use std::cell::RefCell;
        thread_local!(static FREED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) });
        unsafe fn free(result: *mut u8) {
            FREED.with(|f| f.borrow_mut().push(result as usize));
        }
        let freed = || FREED.with(|f| f.borrow().clone());
        // The only test touching the pending slot, so nothing runs between these calls.
        let first = unsafe { deferred::call(|| 16 as *mut u8, free) };
        assert_eq!((first as usize, freed()), (16, vec![]), "the host still has to read it");
        let second = unsafe {
            deferred::call(
                || {
                    assert_eq!(freed(), [16], "freed before the next hook writes its result");
                    32 as *mut u8
                },
                free,
            )
        };
        assert_eq!((second as usize, freed()), (32, vec![16]));
    }
}
