//! Header filter: on requests, answers 401 when `api_keys` is set and `x-api-key` is not one
//! of them, adds `x-request-id` when absent, and sets/removes the configured headers; on
//! responses, sets/removes the configured response headers.
//!
//! Config: `{ request_set = { "x-env" = "prod" }, request_remove = ["x-debug"],
//! response_set = { "x-served-by" = "wasmesh" }, response_remove = ["server"], api_keys = ["k1"] }`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmesh_plugin_sdk::Request;
use wasmesh_plugin_sdk::filter::exports::wasmesh::plugin::lifecycle;
use wasmesh_plugin_sdk::filter::wasmesh::plugin::types::{LocalResponse, Mutations};
use wasmesh_plugin_sdk::filter::{FilterAction, Guest, Hooks, Interest, RequestHead, ResponseHead};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request_set: BTreeMap<String, String>,
    #[serde(default)]
    request_remove: Vec<String>,
    #[serde(default)]
    response_set: BTreeMap<String, String>,
    #[serde(default)]
    response_remove: Vec<String>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default = "yes")]
    request_id: bool,
}

fn yes() -> bool {
    true
}

/// The configuration as the hooks use it: header names lower-cased and values as bytes once,
/// at `init`, not on every request.
struct Prepared {
    config: Config,
    request_set: Vec<(String, Vec<u8>)>,
    response_set: Vec<(String, Vec<u8>)>,
}

static CONFIG: OnceLock<Prepared> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, Vec<u8>)> {
    map.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect()
}

/// The next request id, `wm-<n>`, written without the formatting machinery.
fn next_request_id() -> Vec<u8> {
    let mut n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    [b"wm-".as_slice(), &digits[at..]].concat()
}

struct HeaderFilter;

impl lifecycle::Guest for HeaderFilter {
    fn init(config_json: String) -> Result<Interest, String> {
        wasmesh_plugin_sdk::init_panic_hook();
        let config: Config = serde_json::from_str(&config_json).map_err(|e| format!("config: {e}"))?;
        // Ask only for the headers and hooks this configuration uses.
        let reads = [(!config.api_keys.is_empty(), "x-api-key"), (config.request_id, "x-request-id")];
        let mut hooks = Hooks::empty();
        if !config.api_keys.is_empty()
            || config.request_id
            || !config.request_set.is_empty()
            || !config.request_remove.is_empty()
        {
            hooks |= Hooks::ON_REQUEST;
        }
        if !config.response_set.is_empty() || !config.response_remove.is_empty() {
            hooks |= Hooks::ON_RESPONSE;
        }
        let (request_set, response_set) = (pairs(&config.request_set), pairs(&config.response_set));
        let _ = CONFIG.set(Prepared { config, request_set, response_set });
        Ok(Interest::headers(reads.into_iter().filter_map(|(used, name)| used.then_some(name))).hooks(hooks))
    }
}

impl Guest for HeaderFilter {
    fn on_request(req: RequestHead) -> FilterAction {
        let Some(Prepared { config: cfg, request_set, .. }) = CONFIG.get() else { return FilterAction::Proceed };
        let req = Request::new(req);
        if !cfg.api_keys.is_empty() && !req.header("x-api-key").is_some_and(|k| cfg.api_keys.iter().any(|a| a == k)) {
            return FilterAction::Respond(LocalResponse {
                status: 401,
                headers: vec![
                    ("content-type".into(), b"text/plain".to_vec()),
                    ("www-authenticate".into(), b"ApiKey".to_vec()),
                ],
                body: b"missing or invalid API key\n".to_vec(),
            });
        }
        let mut set = request_set.clone();
        if cfg.request_id && req.header("x-request-id").is_none() {
            set.push(("x-request-id".into(), next_request_id()));
        }
        if set.is_empty() && cfg.request_remove.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(Mutations { set, remove: cfg.request_remove.clone(), path: None })
    }

    fn on_response(_req: RequestHead, _resp: ResponseHead) -> FilterAction {
        let Some(Prepared { config: cfg, response_set, .. }) = CONFIG.get() else { return FilterAction::Proceed };
        if response_set.is_empty() && cfg.response_remove.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(Mutations { set: response_set.clone(), remove: cfg.response_remove.clone(), path: None })
    }
}

wasmesh_plugin_sdk::filter::export_filter!(HeaderFilter with_types_in wasmesh_plugin_sdk::filter);
