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

/// A request head as the host packs it (`request-head` in `wit/plugin.wit`), read in place:
/// method, authority, path and client address, then the headers the plugin declared.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
    /// Byte ranges of method, authority, path and client address.
    fields: [(usize, usize); 4],
    /// Byte range of the packed headers.
    headers: (usize, usize),
}

impl Request {
    /// Reads the packed head `buf`. A malformed buffer (never sent by the host) reads as empty
    /// fields and no headers rather than failing the plugin.
    pub fn new(buf: Vec<u8>) -> Self {
        let end = buf.len();
        Self::within(buf, 0, end)
    }

    /// Reads the head packed in `buf[start..end]`.
    fn within(buf: Vec<u8>, start: usize, end: usize) -> Self {
        let mut fields = [(start, start); 4];
        let mut at = start;
        for slot in &mut fields {
            let Some(range) = field(&buf[..end], at) else { break };
            *slot = range;
            at = range.1;
        }
        Self { buf, fields, headers: (at, end) }
    }

    fn text(&self, i: usize) -> &str {
        let (start, end) = self.fields[i];
        std::str::from_utf8(&self.buf[start..end]).unwrap_or_default()
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.text(0)
    }

    /// The authority (`Host`), empty when the request had none.
    pub fn authority(&self) -> &str {
        self.text(1)
    }

    /// The path and query.
    pub fn path(&self) -> &str {
        self.text(2)
    }

    /// The downstream client's `ip:port`.
    pub fn client_addr(&self) -> &str {
        self.text(3)
    }

    /// The headers passed: the ones the plugin declared in its `interest`.
    pub fn headers(&self) -> Headers<'_> {
        Headers { rest: &self.buf[self.headers.0..self.headers.1] }
    }

    /// The first value of header `name` (lower-case), if passed and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// A response head as the host packs it (`response-head` in `wit/plugin.wit`), with the
/// request it answers, read in place.
#[derive(Debug, Clone)]
pub struct Response {
    request: Request,
    /// Where the status is; the headers follow it.
    status_at: usize,
}

impl Response {
    /// Reads the packed head `buf`. A malformed buffer (never sent by the host) reads as an
    /// empty request, status 0 and no headers.
    pub fn new(buf: Vec<u8>) -> Self {
        let (start, end) = field(&buf, 0).unwrap_or((buf.len(), buf.len()));
        Self { request: Request::within(buf, start, end), status_at: end }
    }

    /// The request this response answers.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The status code (0 in a malformed buffer, never sent by the host).
    pub fn status(&self) -> u16 {
        match self.request.buf.get(self.status_at..self.status_at + 2) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        }
    }

    /// The headers passed: the ones the plugin declared in its `interest`.
    pub fn headers(&self) -> Headers<'_> {
        Headers { rest: self.request.buf.get(self.status_at + 2..).unwrap_or_default() }
    }

    /// The first value of header `name` (lower-case), if passed and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// Packed header name (lower-case), value pairs, iterated in the order the host passed them.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

impl<'a> Headers<'a> {
    /// The first value of header `name` (lower-case), if present and UTF-8.
    pub fn get(mut self, name: &str) -> Option<&'a str> {
        // Names compared as bytes: only the value found is checked as UTF-8.
        let (_, value) = std::iter::from_fn(|| self.next_raw()).find(|(n, _)| *n == name.as_bytes())?;
        std::str::from_utf8(value).ok()
    }

    /// The next name, value pair as bytes.
    fn next_raw(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let (name_start, name_end) = field(self.rest, 0)?;
        let (value_start, value_end) = field(self.rest, name_end)?;
        let pair = (&self.rest[name_start..name_end], &self.rest[value_start..value_end]);
        self.rest = &self.rest[value_end..];
        Some(pair)
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.next_raw()?;
        Some((std::str::from_utf8(name).unwrap_or_default(), value))
    }
}

/// Header and path changes, packed as the host reads them (`mutations` in `wit/plugin.wit`),
/// applied in the order they were added. Build it once where it does not change (at `init`)
/// and [`extend`](Self::extend) or clone it per call: one buffer, one allocation.
/// ```ignore
/// let changes = Changes::new().remove("x-debug").set("x-env", "prod");
/// FilterAction::Mutate(changes.into())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    buf: Vec<u8>,
}

impl Changes {
    const SET: u8 = 1;
    const APPEND: u8 = 2;
    const REMOVE: u8 = 3;
    const PATH: u8 = 4;

    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// No changes yet, with room for `bytes` of them.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes) }
    }

    /// Sets header `name` to `value`, replacing any header of that name.
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.change(Self::SET, &[name.as_bytes(), value.as_ref()])
    }

    /// Adds a value to header `name`, keeping those present.
    pub fn append(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.change(Self::APPEND, &[name.as_bytes(), value.as_ref()])
    }

    /// Removes header `name`.
    pub fn remove(self, name: &str) -> Self {
        self.change(Self::REMOVE, &[name.as_bytes()])
    }

    /// Replaces the path and query (requests only).
    pub fn path(self, path: &str) -> Self {
        self.change(Self::PATH, &[path.as_bytes()])
    }

    /// Adds all of `other`'s changes after these.
    pub fn extend(mut self, other: &Changes) -> Self {
        self.buf.extend_from_slice(&other.buf);
        self
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The packed size in bytes (for [`with_capacity`](Self::with_capacity)).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    fn change(mut self, tag: u8, fields: &[&[u8]]) -> Self {
        self.buf.push(tag);
        for field in fields {
            // Names, values and paths are far below 4 GiB; a longer one would be cut.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&field[..len as usize]);
        }
        self
    }
}

/// The packed buffer a `mutate` decision carries.
impl From<Changes> for Vec<u8> {
    fn from(changes: Changes) -> Self {
        changes.buf
    }
}

/// The byte range of the length-prefixed field at `at`, if `buf` holds all of it.
fn field(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let len = buf.get(at..at.checked_add(4)?)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let start = at + 4;
    let end = start.checked_add(len)?;
    (end <= buf.len()).then_some((start, end))
}

/// A stable 64-bit FNV-1a hash, for sticky percentage splits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn export_names_follow_the_wit_package() {
        let (name, version) = WIT_PACKAGE.split_once('@').expect("a versioned package");
        assert_eq!(__wit_interface!(lifecycle), format!("{name}/lifecycle@{version}"));
        assert!(include_str!("../../../wit/plugin.wit").contains(&format!("\npackage {WIT_PACKAGE};\n")));
    }

    #[test]
    fn a_packed_request_reads_back() {
        let req =
            Request::new(pack(&[b"GET", b"api", b"/x?y=1", b"1.2.3.4:5", b"x-a", b"1", b"x-b", b"\xff", b"x-a", b"2"]));
        assert_eq!(
            (req.method(), req.authority(), req.path(), req.client_addr()),
            ("GET", "api", "/x?y=1", "1.2.3.4:5")
        );
        assert_eq!(req.header("x-a"), Some("1"), "the first of repeated headers");
        assert_eq!(req.header("x-b"), None, "not UTF-8");
        assert_eq!(req.headers().count(), 3);
    }

    #[test]
    fn a_truncated_buffer_reads_as_what_is_whole() {
        let mut buf = pack(&[b"GET", b"api", b"/", b"c", b"x-a", b"1"]);
        buf.truncate(buf.len() - 1);
        let req = Request::new(buf);
        assert_eq!(req.path(), "/");
        assert_eq!(req.headers().count(), 0);
        assert_eq!(Request::new(vec![9, 0, 0]).method(), "");
    }

    #[test]
    fn changes_pack_in_order_as_the_wit_says() {
        let base = Changes::new().remove("x-debug");
        let changes = Changes::with_capacity(64).extend(&base).set("x-env", "prod").append("vary", b"a").path("/v2");
        let mut want = vec![3];
        want.extend(pack(&[b"x-debug"]));
        want.push(1);
        want.extend(pack(&[b"x-env", b"prod"]));
        want.push(2);
        want.extend(pack(&[b"vary", b"a"]));
        want.push(4);
        want.extend(pack(&[b"/v2"]));
        assert_eq!(Vec::from(changes.clone()), want);
        assert_eq!(changes.len(), want.len());
        assert!(Changes::new().is_empty() && !base.is_empty());
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

    #[test]
    fn a_packed_response_reads_back_with_its_request() {
        let mut buf = pack(&[&pack(&[b"GET", b"api", b"/x", b"c", b"server", b"in"])]);
        buf.extend(404u16.to_le_bytes());
        buf.extend(pack(&[b"server", b"x"]));
        let resp = Response::new(buf);
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.header("server"), Some("x"));
        assert_eq!(resp.headers().count(), 1, "the request's headers are its own");
        let req = resp.request();
        assert_eq!((req.method(), req.path(), req.header("server")), ("GET", "/x", Some("in")));
        assert_eq!(req.headers().count(), 1, "the response's headers are not the request's");

        let truncated = Response::new(vec![200, 0]);
        assert_eq!((truncated.status(), truncated.request().method(), truncated.headers().count()), (0, "", 0));
    }
}
