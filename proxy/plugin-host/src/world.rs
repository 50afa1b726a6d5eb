//! The four plugin worlds of `wit/plugin.wit`, as the host instantiates and initialises them.

use wasmtime::Store;

use crate::bindings::{
    balancer as balancer_world, filter as filter_world, health_check as health_world, router as router_world,
};
use crate::{HostState, types};

/// A plugin world as the host drives it: how to instantiate it and call its `init`.
pub trait World {
    /// The pre-linked component.
    type Pre;
    /// The instantiated bindings.
    type Bindings;
    /// Instantiates `pre` in `store`.
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    /// Calls the instance's `init` with its configuration.
    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<types::Interest, String>>;
}

/// Declares a [`World`] for generated bindings `$bindings` (with pre-instance `$pre`).
macro_rules! world {
    ($(#[$doc:meta])* $name:ident, $bindings:ty, $pre:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl World for $name {
            type Pre = $pre;
            type Bindings = $bindings;
            fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings> {
                pre.instantiate(store)
            }
            fn init(
                b: &Self::Bindings,
                store: &mut Store<HostState>,
                config: &str,
            ) -> wasmtime::Result<Result<types::Interest, String>> {
                b.wasmesh_plugin_lifecycle().call_init(store, config)
            }
        }
    };
}

world!(
    /// The `router` world.
    RouterWorld, router_world::Router, router_world::RouterPre<HostState>
);
world!(
    /// The `filter` world.
    FilterWorld, filter_world::Filter, filter_world::FilterPre<HostState>
);
world!(
    /// The `balancer` world.
    BalancerWorld, balancer_world::Balancer, balancer_world::BalancerPre<HostState>
);
world!(
    /// The `health-check` world.
    HealthCheckWorld, health_world::HealthCheck, health_world::HealthCheckPre<HostState>
);
