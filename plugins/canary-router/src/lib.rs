//! Canary router: requests carrying `header: value` go to `canary`, and so does `percent`
//! percent of the rest, chosen by a hash of `sticky_header` (or the client address) so a
//! client stays on one side. Everything else takes the route's own service.
//!
//! Config: `{ canary = "api-v2", header = "x-canary", value = "1", percent = 10, sticky_header = "x-user" }`.

use wasmesh_plugin_sdk::{Changes, Interest, Request, RouteDecision, Router, UpstreamChoice, fnv1a};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Canary {
    canary: String,
    header: Option<String>,
    value: Option<String>,
    #[serde(default)]
    percent: u8,
    sticky_header: Option<String>,
}

impl Router for Canary {
    type Config = Self;

    fn new(mut config: Self) -> Result<Self, String> {
        if config.percent > 100 {
            return Err(format!("config.percent: {} is over 100", config.percent));
        }
        // The host passes header names in lower case.
        for name in [&mut config.header, &mut config.sticky_header].into_iter().flatten() {
            name.make_ascii_lowercase();
        }
        Ok(config)
    }

    fn interest(&self) -> Interest {
        Interest::headers(self.header.iter().chain(&self.sticky_header).cloned())
    }

    fn route(&mut self, req: &Request) -> RouteDecision {
        let by_header = match (&self.header, &self.value) {
            (Some(name), Some(want)) => req.header(name) == Some(want.as_str()),
            (Some(name), None) => req.header(name).is_some(),
            _ => false,
        };
        let by_share = self.percent > 0 && {
            let key = self.sticky_header.as_deref().and_then(|h| req.header(h)).unwrap_or_else(|| req.client_addr());
            fnv1a(key.as_bytes()) % 100 < u64::from(self.percent)
        };
        if !(by_header || by_share) {
            return RouteDecision::Default;
        }
        let changes = Changes::new().set("x-canary-routed", "1");
        RouteDecision::Upstream(UpstreamChoice { service: self.canary.clone(), mutations: Some(changes.into()) })
    }
}

wasmesh_plugin_sdk::export!(Canary);
