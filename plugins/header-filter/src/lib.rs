//! Header filter: on requests, answers 401 when `api_keys` is set and `x-api-key` is not one
//! of them, adds `x-request-id` when absent, and sets/removes the configured headers; on
//! responses, sets/removes the configured response headers and adds defaults for those the
//! upstream did not send.
//!
//! Config: `{ request_set = { "x-env" = "prod" }, request_remove = ["x-debug"],
//! response_set = { "x-served-by" = "wasmesh" }, response_remove = ["server"],
//! response_default = { "cache-control" = "no-store" }, api_keys = ["k1"] }`.

use std::collections::BTreeMap;

use wasmesh_plugin_sdk::{Changes, Filter, FilterAction, Hooks, Interest, LocalResponse, Request, Response};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    request_set: BTreeMap<String, String>,
    request_remove: Vec<String>,
    response_set: BTreeMap<String, String>,
    response_remove: Vec<String>,
    /// Set on a response only when it lacks the header.
    response_default: BTreeMap<String, String>,
    api_keys: Vec<String>,
    #[serde(default = "yes")]
    request_id: bool,
}

fn yes() -> bool {
    true
}

/// The configuration as the hooks use it: the changes packed once, not on every request.
struct HeaderFilter {
    api_keys: Vec<String>,
    request_id: bool,
    request: Changes,
    response: Changes,
    /// Names in lower case.
    response_default: BTreeMap<String, String>,
    /// Request ids given so far (the last was `wm-<issued>`).
    issued: u64,
}

/// Removals come first, so that a header both removed and set ends up set.
fn changes(set: &BTreeMap<String, String>, remove: &[String]) -> Changes {
    let removed = remove.iter().fold(Changes::new(), |c, name| c.remove(&name.to_ascii_lowercase()));
    set.iter().fold(removed, |c, (name, value)| c.set(&name.to_ascii_lowercase(), value))
}

/// Writes `wm-<n>` into `buf` without the formatting machinery.
fn request_id(mut n: u64, buf: &mut [u8; 23]) -> &[u8] {
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

impl Filter for HeaderFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self {
            request: changes(&config.request_set, &config.request_remove),
            response: changes(&config.response_set, &config.response_remove),
            response_default: config.response_default.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
            api_keys: config.api_keys,
            request_id: config.request_id,
            issued: 0,
        })
    }

    /// Only the headers and hooks this configuration uses.
    fn interest(&self) -> Interest {
        let reads = [(!self.api_keys.is_empty(), "x-api-key"), (self.request_id, "x-request-id")]
            .into_iter()
            .filter(|(used, _)| *used)
            .map(|(_, name)| name.to_owned())
            .chain(self.response_default.keys().cloned());
        let mut hooks = Hooks::empty();
        if !self.api_keys.is_empty() || self.request_id || !self.request.is_empty() {
            hooks |= Hooks::ON_REQUEST;
        }
        if !self.response.is_empty() || !self.response_default.is_empty() {
            hooks |= Hooks::ON_RESPONSE;
        }
        Interest::headers(reads).hooks(hooks)
    }

    fn on_request(&mut self, req: &Request) -> FilterAction {
        if !self.api_keys.is_empty() && !req.header("x-api-key").is_some_and(|k| self.api_keys.iter().any(|a| a == k)) {
            return FilterAction::Respond(LocalResponse {
                status: 401,
                headers: vec![
                    ("content-type".into(), b"text/plain".to_vec()),
                    ("www-authenticate".into(), b"ApiKey".to_vec()),
                ],
                body: b"missing or invalid API key\n".to_vec(),
            });
        }
        let changes = if self.request_id && req.header("x-request-id").is_none() {
            self.issued += 1;
            let mut id = [0; 23];
            // Room for the id change too: one allocation.
            Changes::with_capacity(self.request.len() + 48)
                .extend(&self.request)
                .set("x-request-id", request_id(self.issued, &mut id))
        } else {
            self.request.clone()
        };
        if changes.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(changes.into())
    }

    fn on_response(&mut self, resp: &Response) -> FilterAction {
        let mut changes = self.response.clone();
        for (name, value) in &self.response_default {
            if resp.headers().all(|(n, _)| n != name) {
                changes = changes.set(name, value);
            }
        }
        if changes.is_empty() {
            return FilterAction::Proceed;
        }
        FilterAction::Mutate(changes.into())
    }
}

wasmesh_plugin_sdk::export!(HeaderFilter);
