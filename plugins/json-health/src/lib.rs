//! JSON health check: reads the probe response's JSON body and judges the endpoint by one
//! field, as Spring Boot's `/actuator/health` (`{"status":"UP"}`) or the IETF health-check
//! draft (`{"status":"pass"}`) report it.
//!
//! Config (all optional): `{ field = "status", healthy = ["ok", "up", "pass"],
//! degraded = ["degraded", "warn"] }`. `field` is a dotted path (`checks.db.status`); values
//! compare case-insensitively; `true`/`false` mean healthy/unhealthy. Anything else, a body
//! that is not JSON, or a missing field is unhealthy, with the reason in the verdict.

use std::sync::OnceLock;

use serde_json::Value;
use wasmesh_plugin_sdk::health_check::exports::wasmesh::plugin::lifecycle;
use wasmesh_plugin_sdk::health_check::{Endpoint, Guest, Health, Interest, ProbeResponse};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "Config::default_field")]
    field: String,
    #[serde(default = "Config::default_healthy")]
    healthy: Vec<String>,
    #[serde(default = "Config::default_degraded")]
    degraded: Vec<String>,
}

impl Config {
    fn default_field() -> String {
        "status".into()
    }
    fn default_healthy() -> Vec<String> {
        ["ok", "up", "pass", "healthy"].map(String::from).to_vec()
    }
    fn default_degraded() -> Vec<String> {
        ["degraded", "warn"].map(String::from).to_vec()
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct JsonHealth;

impl lifecycle::Guest for JsonHealth {
    fn init(config_json: String) -> Result<Interest, String> {
        wasmesh_plugin_sdk::init_panic_hook();
        let config: Config = serde_json::from_str(&config_json).map_err(|e| format!("config: {e}"))?;
        if config.field.is_empty() || config.field.split('.').any(str::is_empty) {
            return Err(format!("config.field: `{}` is not a dotted path", config.field));
        }
        let _ = CONFIG.set(config);
        // Only the body matters.
        Ok(Interest::headers::<String>([]))
    }
}

impl Guest for JsonHealth {
    fn judge(_target: Endpoint, probe: ProbeResponse) -> Health {
        let Some(cfg) = CONFIG.get() else { return Health::Unhealthy("not initialised".into()) };
        let body: Value = match serde_json::from_slice(&probe.body) {
            Ok(v) => v,
            Err(e) => return Health::Unhealthy(format!("status {}: body is not JSON ({e})", probe.status)),
        };
        let Some(value) = cfg.field.split('.').try_fold(&body, |v, key| v.get(key)) else {
            return Health::Unhealthy(format!("status {}: no `{}` in the body", probe.status, cfg.field));
        };
        let text = match value {
            Value::Bool(true) => return Health::Healthy,
            Value::Bool(false) => return Health::Unhealthy(format!("{} is false", cfg.field)),
            Value::String(s) => s.as_str(),
            other => return Health::Unhealthy(format!("{} is {other}", cfg.field)),
        };
        let is = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(text));
        if is(&cfg.healthy) {
            Health::Healthy
        } else if is(&cfg.degraded) {
            Health::Degraded(format!("{} is \"{text}\"", cfg.field))
        } else {
            Health::Unhealthy(format!("{} is \"{text}\"", cfg.field))
        }
    }
}

wasmesh_plugin_sdk::health_check::export_health_check!(JsonHealth with_types_in wasmesh_plugin_sdk::health_check);
