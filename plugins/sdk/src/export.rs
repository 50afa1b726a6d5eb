//! What [`export!`](crate::export) expands to, and the code it calls: the one way every world's
//! plugin is exported.
//!
//! - The plugin value lives in a [`Slot`], one per exported type (a static the macro declares).
//!   `init` installs the panic hook, parses the config, builds the plugin with the world trait's
//!   `new` and stores it; each hook lends it to the trait's method as `&mut self`.
//! - The generated bindings' `Guest` traits are implemented once here for [`Exports<P>`], which
//!   reads the packed head, lends the plugin and returns its decision.
//! - The component's exports are written by the macro, not by the bindings: the bindings are
//!   generated with a prefix that leaves their own exports out of the component, so that the
//!   SDK exports `init` with its `post-return` and every hook through [`deferred::call`], which
//!   frees a hook's result at the start of the next call instead of in a `post-return` export.

use std::cell::UnsafeCell;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::{Interest, world};

/// The plugin value of a component instance: stored by `init`, lent to each hook.
pub struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: a component instance runs on one thread (wasm32 components have no threads), and the
// SDK's own tests give each test plugin type its own slot, used by one test. Elsewhere `Slot` is
// not `Sync`, so no static slot exists: `export!` exports nothing natively.
#[cfg(any(target_arch = "wasm32", test))]
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    /// An empty slot, filled by `init`.
    #[allow(clippy::new_without_default)] // a `static` needs the `const fn`
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// Stores `plugin`, dropping the one stored before (an instance's `init` runs once, but a
    /// second call would replace it). Called by `init` only.
    fn set(&self, plugin: T) {
        // SAFETY: the only other reference into a slot is the one `lend` gives a hook for the
        // length of its call, and `init` is a call of its own: the host makes one call into an
        // instance at a time, and a plugin cannot call an export (its imports, log and metrics,
        // never call back into it).
        unsafe { *self.0.get() = Some(plugin) }
    }

    /// Runs `hook` on the stored plugin. Panics, which traps, when `init` stored none: the host
    /// calls no hook of an instance whose `init` failed.
    fn lend<R>(&self, hook: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: no other reference into the slot is alive: hooks and `init` are separate calls
        // into the instance, one at a time, none reentrant (as in `set`), and `Slot` gives no
        // access outside this module.
        match unsafe { &mut *self.0.get() } {
            Some(plugin) => hook(plugin),
            None => not_initialised(),
        }
    }
}

#[cold]
#[inline(never)]
fn not_initialised() -> ! {
    panic!("wasmesh plugin: a hook was called before `init` succeeded")
}

/// A plugin type with its [`Slot`]: implemented by [`export!`](crate::export), which declares
/// the slot.
pub trait Stored: Sized + 'static {
    /// The slot holding this instance's plugin.
    fn slot() -> &'static Slot<Self>;
}

/// The bindings' `Guest` traits for plugin type `P`, which implements its world's trait.
pub struct Exports<P>(PhantomData<P>);

/// `init` of every world: routes panics to the host's log, parses `config_json` into the
/// plugin's config (`config: <why>` when it does not parse), builds the plugin with `new`,
/// stores it in `slot` and answers its interest. An `Err` rejects the load.
fn init<P, C: DeserializeOwned>(
    slot: &Slot<P>,
    config_json: &str,
    new: impl FnOnce(C) -> Result<P, String>,
    interest: impl FnOnce(&P) -> Interest,
) -> Result<Interest, String> {
    install_panic_hook();
    let config = serde_json::from_str(config_json).map_err(|e| format!("config: {e}"))?;
    let plugin = new(config)?;
    let interest = interest(&plugin);
    slot.set(plugin);
    Ok(interest)
}

/// Sends panic messages to the host's log (plugins have no stdio) instead of stderr. Natively
/// (tests) there is no host: panics keep going to stderr.
fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| {
        world::wasmesh::plugin::log::log(world::wasmesh::plugin::log::Level::Error, &info.to_string());
    }));
}

/// Implements the lifecycle export for plugins of world trait `$trait`.
#[cfg(any(feature = "router", feature = "filter", feature = "balancer", feature = "health-check"))]
macro_rules! lifecycle {
    ($trait:path) => {
        impl<P: $trait + Stored> world::exports::wasmesh::plugin::lifecycle::Guest for Exports<P> {
            fn init(config_json: String) -> Result<Interest, String> {
                init(P::slot(), &config_json, P::new, P::interest)
            }
        }
    };
}

#[cfg(feature = "router")]
lifecycle!(crate::Router);

#[cfg(feature = "router")]
impl<P: crate::Router + Stored> world::Guest for Exports<P> {
    fn route(req: world::RequestHead) -> crate::RouteDecision {
        P::slot().lend(|plugin| plugin.route(&crate::Request::new(req)))
    }
}

#[cfg(feature = "filter")]
lifecycle!(crate::Filter);

#[cfg(feature = "filter")]
impl<P: crate::Filter + Stored> world::Guest for Exports<P> {
    fn on_request(req: world::RequestHead) -> crate::FilterAction {
        P::slot().lend(|plugin| plugin.on_request(&crate::Request::new(req)))
    }

    fn on_response(resp: world::ResponseHead) -> crate::FilterAction {
        P::slot().lend(|plugin| plugin.on_response(&crate::Response::new(resp)))
    }
}

#[cfg(feature = "balancer")]
lifecycle!(crate::Balancer);

#[cfg(feature = "balancer")]
impl<P: crate::Balancer + Stored> world::Guest for Exports<P> {
    fn pick(req: world::RequestHead, candidates: Vec<crate::Endpoint>) -> Option<u32> {
        P::slot().lend(|plugin| plugin.pick(&crate::Request::new(req), &candidates))
    }
}

#[cfg(feature = "health-check")]
lifecycle!(crate::HealthCheck);

#[cfg(feature = "health-check")]
impl<P: crate::HealthCheck + Stored> world::Guest for Exports<P> {
    fn judge(target: crate::Endpoint, probe: crate::ProbeResponse) -> crate::Health {
        P::slot().lend(|plugin| plugin.judge(&target, &probe))
    }
}

/// Hook results freed when the next hook is called instead of by a `post-return` export.
///
/// A hook's decision (its header changes, a local response, a verdict's reason) stays in the
/// plugin's memory until the host has read it; the canonical ABI frees it with a `post-return`
/// function the host calls right after, which is one more entry into the sandbox per call:
/// about as costly as the hook's own work (callgrind, ~360 instructions each on the proxy's
/// side). No hook this SDK exports has a `post-return`: each hook call first frees the result of
/// the call before it, whose return area no other call has written since (calls into an
/// instance are one at a time, and a trapped instance is never called again). A balancer's
/// `pick` answers `option<u32>`, which owns no memory: it has nothing to free, as it would have
/// no `post-return`. `init` keeps its ordinary `post-return`: it runs once per instance.
pub mod deferred {
    use std::cell::Cell;

    /// What frees a hook's result, given the result.
    pub type Cleanup = unsafe fn(*mut u8);

    /// The cleanup of the last hook's result, and that result.
    type Pending = Option<(Cleanup, *mut u8)>;

    struct PendingCell(Cell<Pending>);
    // SAFETY: components are single-threaded; nothing else touches the cell.
    unsafe impl Sync for PendingCell {}

    static PENDING: PendingCell = PendingCell(Cell::new(None));

    /// Frees the previous hook's result, runs `hook` (a generated `_export_*_cabi`), and
    /// keeps what frees its result (`cleanup`, none when it owns no memory) for the next call.
    ///
    /// # Safety
    /// `cleanup` must be the generated `__post_return_*` of the function `hook` calls.
    pub unsafe fn call(hook: impl FnOnce() -> *mut u8, cleanup: Option<Cleanup>) -> *mut u8 {
        if let Some((free, result)) = PENDING.0.take() {
            // SAFETY: `result` is the previous hook's return area, untouched since it returned,
            // and `free` its cleanup (the caller's promise when it was stored).
            unsafe { free(result) };
        }
        let result = hook();
        PENDING.0.set(cleanup.map(|free| (free, result)));
        result
    }
}

/// Exports `$ty`, which implements world trait `$trait`, as the component's plugin of world
/// module `$world`: the world's type information (from the generated `$bindings` macro, whose
/// own exports are prefixed out), `init` with its `post-return`, and each hook (export name,
/// generated lifting function and flat parameters, and its generated `post-return` function
/// when its result owns memory) through [`deferred::call`].
///
/// Natively (a plugin's unit tests) nothing is exported: only the trait is checked.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    (
        $ty:ty, $trait:ident, $world:ident, $bindings:ident,
        $($hook:literal => $cabi:ident($($arg:ident: $arg_ty:ty),*) $(freed by $post:ident)?;)+
    ) => {
        const _: () = {
            fn implements<P: $crate::$trait>() {}
            let _: fn() = implements::<$ty>;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type Exports = $crate::export::Exports<$ty>;

            impl $crate::export::Stored for $ty {
                fn slot() -> &'static $crate::export::Slot<Self> {
                    static SLOT: $crate::export::Slot<$ty> = $crate::export::Slot::new();
                    &SLOT
                }
            }

            $crate::$world::$bindings!(Exports with_types_in $crate::$world);

            #[unsafe(export_name = concat!($crate::__wit_interface!(lifecycle), "#init"))]
            unsafe extern "C" fn init(arg0: *mut u8, arg1: usize) -> *mut u8 {
                // SAFETY: the host calls this as the canonical ABI calls `init`: with the config
                // string, written to memory it allocated through `cabi_realloc`.
                unsafe { $crate::$world::exports::wasmesh::plugin::lifecycle::_export_init_cabi::<Exports>(arg0, arg1) }
            }

            #[unsafe(export_name = concat!("cabi_post_", $crate::__wit_interface!(lifecycle), "#init"))]
            unsafe extern "C" fn init_post_return(result: *mut u8) {
                // SAFETY: the host calls this once after `init`, with the result `init` returned.
                unsafe { $crate::$world::exports::wasmesh::plugin::lifecycle::__post_return_init::<Exports>(result) }
            }

            $(
                const _: () = {
                    #[unsafe(export_name = $hook)]
                    unsafe extern "C" fn hook($($arg: $arg_ty),*) -> *mut u8 {
                        // SAFETY: the host calls this as the canonical ABI calls the hook, with its
                        // arguments lowered into these parameters; the cleanup given is the
                        // function generated to free this hook's result.
                        unsafe {
                            $crate::export::deferred::call(
                                || $crate::$world::$cabi::<Exports>($($arg),*),
                                // The `post-return` function when the hook has one, else `None`.
                                None $(.or(Some($crate::$world::$post::<Exports>)))?,
                            )
                        }
                    }
                };
            )+
        };
    };
}

/// Exports `$ty`, a [`Router`](crate::Router), as the component's router: its `init` and
/// `route`. Once per plugin crate.
#[cfg(feature = "router")]
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        $crate::__export_world!(
            $ty, Router, router, __export_router_bindings,
            "route" => _export_route_cabi(arg0: *mut u8, arg1: usize) freed by __post_return_route;
        );
    };
}

/// Exports `$ty`, a [`Filter`](crate::Filter), as the component's filter: its `init`,
/// `on-request` and `on-response`. Once per plugin crate.
#[cfg(feature = "filter")]
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        $crate::__export_world!(
            $ty, Filter, filter, __export_filter_bindings,
            "on-request" => _export_on_request_cabi(arg0: *mut u8, arg1: usize) freed by __post_return_on_request;
            "on-response" => _export_on_response_cabi(arg0: *mut u8, arg1: usize) freed by __post_return_on_response;
        );
    };
}

/// Exports `$ty`, a [`Balancer`](crate::Balancer), as the component's balancer: its `init` and
/// `pick`. Once per plugin crate.
#[cfg(feature = "balancer")]
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        $crate::__export_world!(
            $ty, Balancer, balancer, __export_balancer_bindings,
            // `option<u32>` owns no memory: no `post-return`.
            "pick" => _export_pick_cabi(arg0: *mut u8, arg1: usize, arg2: *mut u8, arg3: usize);
        );
    };
}

/// Exports `$ty`, a [`HealthCheck`](crate::HealthCheck), as the component's health check: its
/// `init` and `judge`. Once per plugin crate.
#[cfg(feature = "health-check")]
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        $crate::__export_world!(
            $ty, HealthCheck, health_check, __export_health_check_bindings,
            "judge" => _export_judge_cabi(
                arg0: i32, arg1: *mut u8, arg2: usize, arg3: i32, arg4: i32, arg5: i32, arg6: i32,
                arg7: *mut u8, arg8: usize, arg9: i32, arg10: *mut u8, arg11: usize, arg12: *mut u8,
                arg13: usize
            ) freed by __post_return_judge;
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(any(feature = "router", feature = "balancer"))]
    use crate::Request;
    #[cfg(not(feature = "health-check"))]
    use crate::head::tests::pack;
    use world::exports::wasmesh::plugin::lifecycle::Guest as _;

    #[test]
    fn a_hook_result_is_freed_when_the_next_hook_starts_and_not_before() {
        use std::cell::RefCell;
        thread_local!(static FREED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) });
        unsafe fn free(result: *mut u8) {
            FREED.with(|f| f.borrow_mut().push(result as usize));
        }
        let freed = || FREED.with(|f| f.borrow().clone());
        // The only test touching the pending slot, so nothing runs between these calls.
        let call = |result: usize, cleanup: Option<deferred::Cleanup>| {
            // SAFETY: `free` only records the pointer.
            unsafe { deferred::call(|| result as *mut u8, cleanup) as usize }
        };
        assert_eq!((call(16, Some(free)), freed()), (16, vec![]), "the host still has to read it");
        // SAFETY: as in `call`.
        let second = unsafe {
            deferred::call(
                || {
                    assert_eq!(freed(), [16], "freed before the next hook writes its result");
                    32 as *mut u8
                },
                Some(free),
            )
        };
        assert_eq!((second as usize, freed()), (32, vec![16]));
        assert_eq!((call(48, None), freed()), (48, vec![16, 32]), "a result without cleanup");
        assert_eq!((call(64, Some(free)), freed()), (64, vec![16, 32]), "has nothing to free");
    }

    /// A plugin that counts its calls and reads one header, named by its config.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        header: String,
    }

    #[derive(Debug)]
    struct Counting {
        header: String,
        calls: u32,
    }

    fn new(config: Config) -> Result<Counting, String> {
        if config.header.is_empty() {
            return Err("config.header: empty".into());
        }
        Ok(Counting { header: config.header.to_ascii_lowercase(), calls: 0 })
    }

    fn interest(plugin: &Counting) -> Interest {
        Interest::headers([plugin.header.as_str()])
    }

    #[test]
    fn init_parses_the_config_builds_the_plugin_and_answers_its_interest() {
        let slot = Slot::new();
        let answered = init(&slot, r#"{"header":"X-User"}"#, new, interest).expect("init");
        assert_eq!(answered.headers, Some(vec!["x-user".to_owned()]));
        slot.lend(|p| p.calls += 1);
        assert_eq!(slot.lend(|p| p.calls), 1, "the plugin is kept between calls");

        let err = |json| init(&Slot::new(), json, new, interest).expect_err(json);
        assert!(err(r#"{"headr":"x"}"#).starts_with("config: unknown field `headr`"), "{}", err(r#"{"headr":"x"}"#));
        assert!(err("{}").starts_with("config: missing field `header`"));
        assert_eq!(err(r#"{"header":""}"#), "config.header: empty", "`new`'s own reason, as it is");
    }

    #[test]
    #[should_panic(expected = "before `init` succeeded")]
    fn a_hook_before_init_traps() {
        Slot::<Counting>::new().lend(|_| ());
    }

    impl Stored for Counting {
        fn slot() -> &'static Slot<Self> {
            static SLOT: Slot<Counting> = Slot::new();
            &SLOT
        }
    }

    #[cfg(feature = "router")]
    impl crate::Router for Counting {
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            new(config)
        }
        fn interest(&self) -> Interest {
            interest(self)
        }
        fn route(&mut self, req: &Request) -> crate::RouteDecision {
            self.calls += 1;
            match req.header(&self.header) {
                Some(to) => crate::RouteDecision::Upstream(crate::UpstreamChoice {
                    service: format!("{to}-{}", self.calls),
                    mutations: None,
                }),
                None => crate::RouteDecision::Default,
            }
        }
    }

    /// The only test using `Counting`'s static slot.
    #[cfg(feature = "router")]
    #[test]
    fn a_router_gets_its_plugin_and_the_request_read() {
        use world::Guest as _;

        type E = Exports<Counting>;
        assert!(E::init(r#"{"header":"x-to"}"#.into()).is_ok());
        let service = |decision| match decision {
            crate::RouteDecision::Upstream(choice) => choice.service,
            _ => "default".into(),
        };
        assert_eq!(service(E::route(pack(&[b"GET", b"api", b"/", b"c", b"x-to", b"v2"]))), "v2-1");
        assert_eq!(service(E::route(pack(&[b"GET", b"api", b"/", b"c"]))), "default");
        assert_eq!(service(E::route(pack(&[b"GET", b"api", b"/", b"c", b"x-to", b"v3"]))), "v3-3");
    }

    #[cfg(feature = "filter")]
    impl crate::Filter for Counting {
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            new(config)
        }
        fn interest(&self) -> Interest {
            interest(self).hooks(crate::Hooks::ON_RESPONSE)
        }
        fn on_response(&mut self, resp: &crate::Response) -> crate::FilterAction {
            self.calls += 1;
            let echo = resp.request().header(&self.header).unwrap_or("none");
            let changes = crate::Changes::new().set("x-seen", format!("{echo} {} {}", resp.status(), self.calls));
            crate::FilterAction::Mutate(changes.into())
        }
    }

    /// The only test using `Counting`'s static slot.
    #[cfg(feature = "filter")]
    #[test]
    fn a_filter_gets_its_plugin_and_the_response_read_and_proceeds_where_not_implemented() {
        use world::Guest as _;

        type E = Exports<Counting>;
        assert!(E::init(r#"{"header":"x-a"}"#.into()).is_ok_and(|i| i.hooks == crate::Hooks::ON_RESPONSE));
        let request = pack(&[b"GET", b"api", b"/", b"c", b"x-a", b"1"]);
        assert!(matches!(E::on_request(request.clone()), crate::FilterAction::Proceed));
        let mut resp = pack(&[&request]);
        resp.extend(204u16.to_le_bytes());
        let want = crate::Changes::new().set("x-seen", "1 204 1");
        assert!(matches!(E::on_response(resp), crate::FilterAction::Mutate(m) if m == Vec::from(want)));
    }

    #[cfg(feature = "balancer")]
    impl crate::Balancer for Counting {
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            new(config)
        }
        fn interest(&self) -> Interest {
            interest(self)
        }
        /// The candidate whose address the header names.
        fn pick(&mut self, req: &Request, candidates: &[crate::Endpoint]) -> Option<u32> {
            let want = req.header(&self.header)?;
            candidates.iter().position(|e| e.address == want).map(|i| i as u32)
        }
    }

    /// The only test using `Counting`'s static slot.
    #[cfg(feature = "balancer")]
    #[test]
    fn a_balancer_gets_its_plugin_the_request_and_the_candidates() {
        use world::Guest as _;

        type E = Exports<Counting>;
        assert!(E::init(r#"{"header":"x-to"}"#.into()).is_ok());
        let endpoint = |address: &str| crate::Endpoint {
            id: 0,
            address: address.into(),
            weight: 1,
            in_flight: 0,
            ewma_latency_us: 0,
            healthy: true,
            metadata: vec![],
        };
        let candidates = || vec![endpoint("a:1"), endpoint("b:1")];
        assert_eq!(E::pick(pack(&[b"GET", b"api", b"/", b"c", b"x-to", b"b:1"]), candidates()), Some(1));
        assert_eq!(E::pick(pack(&[b"GET", b"api", b"/", b"c"]), candidates()), None);
    }

    #[cfg(feature = "health-check")]
    impl crate::HealthCheck for Counting {
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            new(config)
        }
        fn interest(&self) -> Interest {
            interest(self)
        }
        fn judge(&mut self, target: &crate::Endpoint, probe: &crate::ProbeResponse) -> crate::Health {
            self.calls += 1;
            match crate::header(&probe.headers, &self.header) {
                Some(why) => crate::Health::Degraded(format!("{} {why} {}", target.address, self.calls)),
                None => crate::Health::Healthy,
            }
        }
    }

    /// The only test using `Counting`'s static slot.
    #[cfg(feature = "health-check")]
    #[test]
    fn a_health_check_gets_its_plugin_the_endpoint_and_the_probe() {
        use world::Guest as _;

        type E = Exports<Counting>;
        assert!(E::init(r#"{"header":"x-why"}"#.into()).is_ok());
        let target = crate::Endpoint {
            id: 0,
            address: "a:1".into(),
            weight: 1,
            in_flight: 0,
            ewma_latency_us: 0,
            healthy: true,
            metadata: vec![],
        };
        let probe = |headers: Vec<(String, Vec<u8>)>| crate::ProbeResponse { status: 200, headers, body: vec![] };
        assert!(matches!(E::judge(target.clone(), probe(vec![])), crate::Health::Healthy));
        let slow = probe(vec![("x-why".into(), b"slow".to_vec())]);
        assert!(matches!(E::judge(target, slow), crate::Health::Degraded(why) if why == "a:1 slow 2"));
    }
}
