//! Canary router: requests carrying `header: value` go to `canary`, and so does `percent`
//! percent of the rest, chosen by a hash of `sticky_header` (or the client address) so a
//! client stays on one side. Everything else takes the route's own service.
//!
//! Config: `{ canary = "api-v2", header = "x-canary", value = "1", percent = 10, sticky_header = "x-user" }`.

use std::sync::OnceLock;

use wasmesh_plugin_sdk::router::exports::wasmesh::plugin::lifecycle;
use wasmesh_plugin_sdk::router::wasmesh::plugin::types::UpstreamChoice;
use wasmesh_plugin_sdk::router::{Guest, Interest, RequestHead, RouteDecision};
use wasmesh_plugin_sdk::{Changes, Request, fnv1a};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    canary: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    percent: u8,
    #[serde(default)]
    sticky_header: Option<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Canary;

impl lifecycle::Guest for Canary {
    fn init(config_json: String) -> Result<Interest, String> {
        wasmesh_plugin_sdk::init_panic_hook();
        let mut config: Config = serde_json::from_str(&config_json).map_err(|e| format!("config: {e}"))?;
        if config.percent > 100 {
            return Err(format!("config.percent: {} is over 100", config.percent));
        }
        // The host passes header names in lower case.
        for name in [&mut config.header, &mut config.sticky_header].into_iter().flatten() {
            name.make_ascii_lowercase();
        }
        let interest = Interest::headers(config.header.iter().chain(&config.sticky_header).cloned());
        let _ = CONFIG.set(config);
        Ok(interest)
    }
}

impl Guest for Canary {
    fn route(req: RequestHead) -> RouteDecision {
        let Some(cfg) = CONFIG.get() else { return RouteDecision::Default };
        let req = Request::new(req);
        let by_header = match (&cfg.header, &cfg.value) {
            (Some(name), Some(want)) => req.header(name) == Some(want.as_str()),
            (Some(name), None) => req.header(name).is_some(),
            _ => false,
        };
        let by_share = cfg.percent > 0 && {
            let key = cfg.sticky_header.as_deref().and_then(|h| req.header(h)).unwrap_or_else(|| req.client_addr());
            fnv1a(key.as_bytes()) % 100 < u64::from(cfg.percent)
        };
        if by_header || by_share {
            let changes = Changes::new().set("x-canary-routed", "1");
            RouteDecision::Upstream(UpstreamChoice { service: cfg.canary.clone(), mutations: Some(changes.into()) })
        } else {
            RouteDecision::Default
        }
    }
}

wasmesh_plugin_sdk::router::export_router!(Canary with_types_in wasmesh_plugin_sdk::router);
