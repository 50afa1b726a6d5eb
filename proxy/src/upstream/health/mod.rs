//! Active health checking: a background task per endpoint probes it on an interval (with
//! jitter) and moves it between healthy and unhealthy after consecutive results.
//!
//! Checks never run on the request path. The supervisor reconciles the running checks with
//! each snapshot: it starts checks for new endpoints, restarts those whose settings changed,
//! and stops those whose endpoint left.

mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

pub use probe::{ProbeOutcome, probe};

use super::EndpointStats;
use super::endpoint::Health;
use crate::config::HealthCheckConfig;
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{HealthCheckLabels, ServiceEndpointLabels};

/// What a check loop needs besides its endpoint.
#[derive(Debug, Clone)]
struct CheckSpec {
    config: HealthCheckConfig,
    /// Whether a passing check ends an outlier ejection early.
    uneject: bool,
}

impl PartialEq for CheckSpec {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.uneject == other.uneject
    }
}

/// Runs and stops health checks to match the snapshot in force.
#[derive(Debug, Default)]
pub struct HealthSupervisor {
    running: Mutex<HashMap<(String, SocketAddr), (CheckSpec, CancellationToken)>>,
}

impl HealthSupervisor {
    /// Starts, restarts and stops checks so they match `snapshot`. Must run inside a runtime.
    pub fn reconcile(&self, snapshot: &Snapshot, metrics: &Metrics) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = HashMap::new();
        for service in &snapshot.services {
            let uneject =
                service.policy.outlier.as_ref().is_some_and(|o| o.successful_active_health_check_uneject_host);
            for endpoint in &service.endpoints {
                let own = endpoint.health_check.as_deref();
                let Some(config) = own.or(service.policy.health_check.as_ref()) else { continue };
                let spec = CheckSpec { config: config.clone(), uneject };
                wanted.insert((service.name.clone(), endpoint.address), (spec, endpoint.stats.clone()));
            }
        }
        running.retain(|key, (spec, cancel)| {
            let keep = wanted.get(key).is_some_and(|(want, _)| want == spec);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for (key, (spec, stats)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let cancel = CancellationToken::new();
            let labels = |result: &'static str| HealthCheckLabels {
                service: key.0.clone(),
                endpoint: key.1.to_string(),
                result,
            };
            let counters = Counters {
                success: metrics.health_checks.get_or_create_owned(&labels("success")),
                failure: metrics.health_checks.get_or_create_owned(&labels("failure")),
                state: metrics.endpoint_health.get_or_create_owned(&ServiceEndpointLabels {
                    service: key.0.clone(),
                    endpoint: key.1.to_string(),
                }),
            };
            tokio::spawn(check_loop(key.1, spec.clone(), stats, counters, cancel.clone()));
            running.insert(key, (spec, cancel));
        }
        // Endpoints of services whose checks were removed go back to `unknown`.
        for service in &snapshot.services {
            for e in &service.endpoints {
                if e.health_check.is_none() && service.policy.health_check.is_none() {
                    e.stats.set_health(Health::Unknown);
                }
            }
        }
    }

    /// Stops every check.
    pub fn stop_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, cancel)) in running.drain() {
            cancel.cancel();
        }
    }
}

#[derive(Debug)]
struct Counters {
    success: Counter,
    failure: Counter,
    state: Gauge,
}

fn gauge_value(health: Health) -> i64 {
    match health {
        Health::Healthy => 1,
        Health::Unhealthy => 0,
        Health::Unknown => -1,
    }
}

/// The verdict after a result, given the current verdict and consecutive counts.
fn next_health(current: Health, passed: bool, streak: u32, cfg: &HealthCheckConfig) -> Health {
    match (current, passed) {
        // The first completed check decides at once.
        (Health::Unknown, true) => Health::Healthy,
        (Health::Unknown, false) => Health::Unhealthy,
        (Health::Healthy, false) if streak >= cfg.unhealthy_threshold => Health::Unhealthy,
        (Health::Unhealthy, true) if streak >= cfg.healthy_threshold => Health::Healthy,
        (other, _) => other,
    }
}

/// The wait before the next probe: the interval plus a random share of the jitter.
fn next_delay(cfg: &HealthCheckConfig) -> Duration {
    let jitter = cfg.interval_jitter.as_nanos() as u64;
    cfg.interval + Duration::from_nanos(if jitter == 0 { 0 } else { fastrand::u64(..jitter) })
}

async fn check_loop(
    addr: SocketAddr,
    spec: CheckSpec,
    stats: Arc<EndpointStats>,
    counters: Counters,
    cancel: CancellationToken,
) {
    let cfg = &spec.config;
    let (mut last, mut streak) = (None, 0u32);
    counters.state.set(gauge_value(stats.health()));
    loop {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = probe(cfg, addr) => outcome,
        };
        let passed = outcome.passed();
        if passed { &counters.success } else { &counters.failure }.inc();
        streak = if last == Some(passed) { streak + 1 } else { 1 };
        last = Some(passed);
        let before = stats.health();
        let after = next_health(before, passed, streak, cfg);
        if after != before {
            tracing::info!(%addr, from = before.as_str(), to = after.as_str(), detail = %outcome, "endpoint health changed");
            stats.set_health(after);
            counters.state.set(gauge_value(after));
        }
        if passed && spec.uneject {
            stats.uneject();
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(next_delay(cfg)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_govern_transitions_after_the_first_result() {
        let cfg =
            HealthCheckConfig { healthy_threshold: 2, unhealthy_threshold: 3, ..toml::from_str("").expect("defaults") };
        assert_eq!(next_health(Health::Unknown, false, 1, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, true, 1, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, true, 2, &cfg), Health::Healthy);
        assert_eq!(next_health(Health::Healthy, false, 2, &cfg), Health::Healthy);
        assert_eq!(next_health(Health::Healthy, false, 3, &cfg), Health::Unhealthy);
    }

    #[test]
    fn probes_are_spread_by_jitter() {
        let cfg = HealthCheckConfig {
            interval: Duration::from_millis(100),
            interval_jitter: Duration::from_millis(50),
            ..toml::from_str("").expect("defaults")
        };
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| next_delay(&cfg)).collect();
        assert!(delays.len() > 40, "delays should differ");
        assert!(delays.iter().all(|d| (Duration::from_millis(100)..Duration::from_millis(150)).contains(d)));
    }
}
