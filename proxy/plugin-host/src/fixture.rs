//! `wasmesh plugin test`: runs a plugin offline against request fixtures and reports each
//! decision, so a plugin author sees what it does before it serves traffic.
//!
//! A fixture file is TOML:
//!
//! ```toml
//! kind = "router"                      # or "filter", "balancer", "health_check"
//! config = { canary = "api-v2", header = "x-canary" }   # the plugin's config table
//!
//! [[cases]]
//! name = "opt-in header goes to the canary"
//! method = "GET"                       # default GET
//! path = "/users"                      # default /
//! headers = { "x-canary" = "1" }
//! expect = "upstream api-v2"           # optional: the decision must start with this
//! # response = { status = 200, headers = { server = "x" } }   # filters: also run on-response
//! # expect_response = "mutate"
//! # candidates = [{ address = "10.0.0.1:80", metadata = { zone = "eu" } }]   # balancers
//! # probe = { status = 200, body = '{"status":"ok"}' }                       # health checks
//! ```
//!
//! Decisions print as `default`, `upstream <service> [set k=v …] [remove k …] [path p]`,
//! `respond <status>`, `proceed`, `mutate [set …] [remove …] [path …]`, `pick <index>`,
//! `none`, `healthy`, `degraded: <reason>`, `unhealthy: <reason>`, or `error: <why>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Change, Plugin, PluginCounters, PluginError, RequestView, ResponseView, load, types};
use wasmesh_config::{FailMode, PluginConfig, PluginKind};
use wasmesh_telemetry::metrics::Metrics;

/// A fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    kind: PluginKind,
    #[serde(default = "empty_table")]
    config: toml::Value,
    cases: Vec<Case>,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

/// One request to run the plugin on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "Case::default_method")]
    method: String,
    #[serde(default = "Case::default_path")]
    path: String,
    #[serde(default)]
    authority: String,
    #[serde(default = "Case::default_client")]
    client: SocketAddr,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    response: Option<ResponseFixture>,
    /// A balancer's candidate endpoints.
    #[serde(default)]
    candidates: Vec<EndpointFixture>,
    /// The endpoint a health check judges.
    #[serde(default)]
    endpoint: Option<EndpointFixture>,
    /// The probe response a health check judges.
    #[serde(default)]
    probe: Option<ProbeFixture>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_response: Option<String>,
}

impl Case {
    fn default_method() -> String {
        "GET".into()
    }
    fn default_path() -> String {
        "/".into()
    }
    fn default_client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }
}

/// A response head for a filter's `on-response`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFixture {
    #[serde(default = "ResponseFixture::default_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl ResponseFixture {
    fn default_status() -> u16 {
        200
    }
}

/// An endpoint as a balancer or health check sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFixture {
    address: SocketAddr,
    #[serde(default = "EndpointFixture::default_weight")]
    weight: u32,
    #[serde(default)]
    in_flight: u32,
    #[serde(default)]
    ewma_latency_us: u32,
    #[serde(default = "EndpointFixture::default_healthy")]
    healthy: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl EndpointFixture {
    fn default_weight() -> u32 {
        1
    }
    fn default_healthy() -> bool {
        true
    }

    fn to_wit(&self, id: u32) -> types::Endpoint {
        types::Endpoint {
            id,
            address: self.address.to_string(),
            weight: self.weight,
            in_flight: self.in_flight,
            ewma_latency_us: self.ewma_latency_us,
            healthy: self.healthy,
            metadata: self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// A health probe's response.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFixture {
    #[serde(default = "ResponseFixture::default_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

/// What one case did.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// The decision on the request.
    pub decision: String,
    /// The decision on the response, for filters given one.
    pub response_decision: Option<String>,
    /// Whether every expectation held.
    pub passed: bool,
}

/// Why fixtures could not run.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The fixture file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The fixture file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plugin did not load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Loads the component at `plugin` with the fixture's kind and config and runs every case.
pub fn run(plugin: &Path, fixture: &Path) -> Result<Vec<CaseResult>, FixtureError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| FixtureError::Read { path: path.into(), source });
    let text = String::from_utf8(read(fixture)?)
        .map_err(|_| FixtureError::Invalid { path: fixture.into(), message: "not UTF-8".into() })?;
    let fx: Fixture =
        toml::from_str(&text).map_err(|e| FixtureError::Invalid { path: fixture.into(), message: e.to_string() })?;
    let cfg = PluginConfig {
        name: plugin.file_stem().map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
        kind: fx.kind,
        path: plugin.to_path_buf(),
        config: fx.config,
        headers: Vec::new(),
        timeout: std::time::Duration::from_millis(100),
        memory_limit_mib: 64,
        fail: FailMode::Open,
        fail_status: 503,
    };
    let metrics = Metrics::new();
    let loaded = load(&cfg, &read(plugin)?, &metrics.plugin_families, PluginCounters::default())?;
    Ok(fx.cases.iter().map(|case| run_case(&loaded, case)).collect())
}

fn run_case(plugin: &Plugin, case: &Case) -> CaseResult {
    let failed = |why: String| CaseResult {
        name: case.name.clone(),
        decision: format!("error: {why}"),
        response_decision: None,
        passed: false,
    };
    let headers = match header_map(&case.headers) {
        Ok(h) => h,
        Err(why) => return failed(why),
    };
    let response_headers = match case.response.as_ref().map(|r| header_map(&r.headers)).transpose() {
        Ok(h) => h.unwrap_or_default(),
        Err(why) => return failed(why),
    };
    let client = case.client.to_string();
    // The plugin is passed only the headers it declared, as the proxy passes them.
    let head = RequestView {
        method: &case.method,
        authority: &case.authority,
        path: &case.path,
        client_addr: &client,
        headers: &headers,
    };
    let (decision, response_decision) = match plugin {
        Plugin::Router(r) => {
            (r.route(&head).map_or_else(|e| format!("error: {}", e.reason), |d| describe_route(&d)), None)
        }
        Plugin::Filter(f) => {
            let not_called = || "proceed (hook not declared)".to_string();
            let decision = if f.wants(types::Hooks::ON_REQUEST) {
                f.on_request(&head).map_or_else(|e| format!("error: {}", e.reason), |a| describe_action(&a))
            } else {
                not_called()
            };
            let response = case.response.as_ref().map(|r| {
                if !f.wants(types::Hooks::ON_RESPONSE) {
                    return not_called();
                }
                let resp = ResponseView { status: r.status, raw: None, headers: &response_headers };
                f.on_response(&head, &resp).map_or_else(|e| format!("error: {}", e.reason), |a| describe_action(&a))
            });
            (decision, response)
        }
        Plugin::Balancer(b) => {
            let candidates: Vec<types::Endpoint> =
                case.candidates.iter().zip(0..).map(|(c, id)| c.to_wit(id)).collect();
            let decision = match b.pick(&b.pack(&head), &candidates) {
                Ok(Some(i)) => format!("pick {i}"),
                Ok(None) => "none".into(),
                Err(e) => format!("error: {}", e.reason),
            };
            (decision, None)
        }
        Plugin::HealthCheck(h) => {
            let endpoint = case.endpoint.as_ref().map_or_else(
                || {
                    EndpointFixture {
                        address: SocketAddr::from(([127, 0, 0, 1], 8080)),
                        weight: 1,
                        in_flight: 0,
                        ewma_latency_us: 0,
                        healthy: true,
                        metadata: BTreeMap::new(),
                    }
                    .to_wit(0)
                },
                |e| e.to_wit(0),
            );
            let probe = match case.probe.as_ref().map(|p| header_map(&p.headers).map(|h| (p, h))).transpose() {
                Ok(None) => types::ProbeResponse { status: 200, headers: vec![], body: vec![] },
                Ok(Some((p, probe_headers))) => types::ProbeResponse {
                    status: p.status,
                    headers: h.header_interest().list(&probe_headers),
                    body: p.body.as_bytes().to_vec(),
                },
                Err(why) => return failed(why),
            };
            (h.judge(&endpoint, &probe).map_or_else(|e| format!("error: {}", e.reason), |v| describe_health(&v)), None)
        }
    };
    let holds = |want: &Option<String>, got: Option<&String>| match (want, got) {
        (None, _) => true,
        (Some(w), Some(g)) => g.starts_with(w.as_str()),
        (Some(_), None) => false,
    };
    let passed = holds(&case.expect, Some(&decision)) && holds(&case.expect_response, response_decision.as_ref());
    CaseResult { name: case.name.clone(), decision, response_decision, passed }
}

/// A fixture's headers as a request or response carries them.
fn header_map(headers: &BTreeMap<String, String>) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        let name =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name `{name}`"))?;
        let value = http::HeaderValue::from_str(value).map_err(|_| format!("invalid value for header `{name}`"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn describe_route(d: &types::RouteDecision) -> String {
    match d {
        types::RouteDecision::Default => "default".into(),
        types::RouteDecision::Upstream(choice) => {
            let mut out = format!("upstream {}", choice.service);
            if let Some(m) = &choice.mutations {
                out.push_str(&describe_mutations(m));
            }
            out
        }
        types::RouteDecision::Respond(r) => format!("respond {}", r.status),
    }
}

fn describe_action(a: &types::FilterAction) -> String {
    match a {
        types::FilterAction::Proceed => "proceed".into(),
        types::FilterAction::Mutate(m) => format!("mutate{}", describe_mutations(m)),
        types::FilterAction::Respond(r) => format!("respond {}", r.status),
    }
}

fn describe_health(h: &types::Health) -> String {
    match h {
        types::Health::Healthy => "healthy".into(),
        types::Health::Degraded(why) => format!("degraded: {why}"),
        types::Health::Unhealthy(why) => format!("unhealthy: {why}"),
    }
}

fn describe_mutations(m: &types::Mutations) -> String {
    let text = String::from_utf8_lossy;
    let mut out = String::new();
    for change in super::changes(m) {
        match change {
            Ok(Change::Set(k, v)) => out.push_str(&format!(" set {}={}", text(k), text(v))),
            Ok(Change::Append(k, v)) => out.push_str(&format!(" append {}={}", text(k), text(v))),
            Ok(Change::Remove(k)) => out.push_str(&format!(" remove {}", text(k))),
            Ok(Change::Path(p)) => out.push_str(&format!(" path {}", text(p))),
            Err(e) => out.push_str(&format!(" ({e})")),
        }
    }
    out
}
