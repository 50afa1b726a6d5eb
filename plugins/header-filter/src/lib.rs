//! Header filter: on requests, answers 401 when `api_keys` is set and `x-api-key` is not one
//! of them, adds `x-request-id` when absent, and sets/removes the configured headers; on
//! responses, sets/removes the configured response headers and adds defaults for those the
//! upstream did not send.
//!
//! Config: `{ request_set = { "x-env" = "prod" }, request_remove = ["x-debug"],
//! response_set = { "x-served-by" = "wasmesh" }, response_remove = ["server"],
//! response_default = { "cache-control" = "no-store" }, api_keys = ["k1"] }`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmesh_plugin_sdk::filter::exports::wasmesh::plugin::lifecycle;
use wasmesh_plugin_sdk::filter::wasmesh::plugin::types::LocalResponse;
use wasmesh_plugin_sdk::filter::{FilterAction, Guest, Hooks, Interest, RequestHead, ResponseHead};
use wasmesh_plugin_sdk::{Changes, Request, Response};

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
    /// Set on a response only when it lacks the header.
    #[serde(default)]
    response_default: BTreeMap<String, String>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default = "yes")]
    request_id: bool,
}

fn yes() -> bool {
    true
}

/// The configuration as the hooks use it: the changes packed once, at `init`, not on every
/// request. Removals come first so that a header both removed and set ends up set.
struct Prepared {
    config: Config,
    request: Changes,
    response: Changes,
}

static CONFIG: OnceLock<Prepared> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn changes(set: &BTreeMap<String, String>, remove: &[String]) -> Changes {
    let removed = remove.iter().fold(Changes::new(), |c, name| c.remove(&name.to_ascii_lowercase()));
    set.iter().fold(removed, |c, (name, value)| c.set(&name.to_ascii_lowercase(), value))
}

/// Writes the next request id, `wm-<n>`, into `buf` without the formatting machinery.
fn next_request_id(buf: &mut [u8; 23]) -> &[u8] {
    let mut n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 3;
    buf[at..at + 3].copy_from_slice(b"wm-");
    &buf[at..]
}

struct HeaderFilter;

impl lifecycle::Guest for HeaderFilter {
    fn init(config_json: String) -> Result<Interest, String> {
        wasmesh_plugin_sdk::init_panic_hook();
        let mut config: Config = serde_json::from_str(&config_json).map_err(|e| format!("config: {e}"))?;
        config.response_default =
            config.response_default.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        // Ask only for the headers and hooks this configuration uses.
        let reads = [(!config.api_keys.is_empty(), "x-api-key"), (config.request_id, "x-request-id")]
            .into_iter()
            .filter(|(used, _)| *used)
            .map(|(_, name)| name.to_owned())
            .chain(config.response_default.keys().cloned())
            .collect::<Vec<_>>();
        let mut hooks = Hooks::empty();
        if !config.api_keys.is_empty()
            || config.request_id
            || !config.request_set.is_empty()
            || !config.request_remove.is_empty()
        {
            hooks |= Hooks::ON_REQUEST;
        }
        if !config.response_set.is_empty() || !config.response_remove.is_empty() || !config.response_default.is_empty()
        {
            hooks |= Hooks::ON_RESPONSE;
        }
        let request = changes(&config.request_set, &config.request_remove);
        let response = changes(&config.response_set, &config.response_remove);
        let _ = CONFIG.set(Prepared { config, request, response });
        Ok(Interest::headers(reads).hooks(hooks))
    }
}

impl Guest for HeaderFilter {
    fn on_request(req: RequestHead) -> FilterAction {
        let Some(Prepared { config: cfg, request, .. }) = CONFIG.get() else { return FilterAction::Proceed };
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
        let changes = if cfg.request_id && req.header("x-request-id").is_none() {
            // Room for the id change too: one allocation.
            let mut id = [0; 23];
            Changes::with_capacity(request.len() + 48).extend(request).set("x-request-id", next_request_id(&mut id))
        } else {
            request.clone()
        };
        if changes.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(changes.into())
    }

    fn on_response(resp: ResponseHead) -> FilterAction {
        let Some(Prepared { config: cfg, response, .. }) = CONFIG.get() else { return FilterAction::Proceed };
        let mut changes = response.clone();
        if !cfg.response_default.is_empty() {
            let resp = Response::new(resp);
            for (name, value) in &cfg.response_default {
                if resp.headers().all(|(n, _)| n != name) {
                    changes = changes.set(name, value);
                }
            }
        }
        if changes.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(changes.into())
    }
}

wasmesh_plugin_sdk::filter::export_filter!(HeaderFilter with_types_in wasmesh_plugin_sdk::filter);
