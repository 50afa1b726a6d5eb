//! JSON health check: reads the probe response's JSON body and judges the endpoint by one
//! field, as Spring Boot's `/actuator/health` (`{"status":"UP"}`) or the IETF health-check
//! draft (`{"status":"pass"}`) report it.
//!
//! Config (all optional): `{ field = "status", healthy = ["ok", "up", "pass"],
//! degraded = ["degraded", "warn"] }`. `field` is a dotted path (`checks.db.status`); values
//! compare case-insensitively; `true`/`false` mean healthy/unhealthy. Anything else, a body
//! that is not JSON, or a missing field is unhealthy, with the reason in the verdict.

use serde_json::Value;
use wasmesh_plugin_sdk::{Endpoint, Health, HealthCheck, Interest, ProbeResponse};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct JsonHealth {
    field: String,
    healthy: Vec<String>,
    degraded: Vec<String>,
}

impl Default for JsonHealth {
    fn default() -> Self {
        Self {
            field: "status".into(),
            healthy: ["ok", "up", "pass", "healthy"].map(String::from).to_vec(),
            degraded: ["degraded", "warn"].map(String::from).to_vec(),
        }
    }
}

impl HealthCheck for JsonHealth {
    type Config = Self;

    fn new(config: Self) -> Result<Self, String> {
        if config.field.split('.').any(str::is_empty) {
            return Err(format!("config.field: `{}` is not a dotted path", config.field));
        }
        Ok(config)
    }

    /// Only the body matters.
    fn interest(&self) -> Interest {
        Interest::no_headers()
    }

    fn judge(&mut self, _target: &Endpoint, probe: &ProbeResponse) -> Health {
        let body: Value = match serde_json::from_slice(&probe.body) {
            Ok(v) => v,
            Err(e) => return Health::Unhealthy(format!("status {}: body is not JSON ({e})", probe.status)),
        };
        let field = &self.field;
        let Some(value) = field.split('.').try_fold(&body, |v, key| v.get(key)) else {
            return Health::Unhealthy(format!("status {}: no `{field}` in the body", probe.status));
        };
        let text = match value {
            Value::Bool(true) => return Health::Healthy,
            Value::Bool(false) => return Health::Unhealthy(format!("{field} is false")),
            Value::String(s) => s.as_str(),
            other => return Health::Unhealthy(format!("{field} is {other}")),
        };
        let is = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(text));
        if is(&self.healthy) {
            Health::Healthy
        } else if is(&self.degraded) {
            Health::Degraded(format!("{field} is \"{text}\""))
        } else {
            Health::Unhealthy(format!("{field} is \"{text}\""))
        }
    }
}

wasmesh_plugin_sdk::export!(JsonHealth);
