//! Active health checking: a background task per endpoint probes it on an interval (with
//! jitter) and moves it between healthy and unhealthy after consecutive results.
//!
//! An HTTP check either compares the status with `expected_statuses` or, with a
//! `health_check` plugin, hands the response (status, headers, first bytes of the body) to
//! the plugin, whose verdict may also be "degraded". Checks never run on the request path. The supervisor reconciles the running checks with
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

pub use probe::{Answer, ProbeOutcome, Target, probe};

use crate::clock::now_millis;
use crate::config::FailMode;
use crate::config::HealthCheckConfig;
use crate::plugin::{HealthCheckPlugin, Plugin, types};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{HealthCheckLabels, ServiceEndpointLabels};
use crate::tls::client::UpstreamTls;
use crate::upstream::endpoint::Health;
use crate::upstream::plugin_view::{endpoint_view, refresh_live_stats};
use crate::upstream::{Endpoint, EndpointStats, Transport};

/// What a check loop needs besides its endpoint.
#[derive(Debug, Clone)]
struct CheckSpec {
    config: HealthCheckConfig,
    /// Whether a passing check ends an outlier ejection early.
    uneject: bool,
    /// The plugin judging HTTP answers, and the endpoint as it sees it.
    judge: Option<(Arc<HealthCheckPlugin>, types::Endpoint)>,
    /// TLS to the endpoint, as its service's traffic uses.
    tls: Option<Arc<UpstreamTls>>,
    /// Whether the service speaks HTTP/2, so the probes do too.
    http2: bool,
}

impl PartialEq for CheckSpec {
    fn eq(&self, other: &Self) -> bool {
        let same_judge = match (&self.judge, &other.judge) {
            (None, None) => true,
            (Some((a, ea)), Some((b, eb))) => {
                Arc::ptr_eq(a, b) && ea.id == eb.id && ea.weight == eb.weight && ea.metadata == eb.metadata
            }
            _ => false,
        };
        self.config == other.config
            && self.uneject == other.uneject
            && same_judge
            && self.tls == other.tls
            && self.http2 == other.http2
    }
}

/// A check's verdict on one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Pass,
    Degraded(String),
    Fail(String),
}

impl Verdict {
    /// Whether the probe counts toward healthy (degraded endpoints still serve).
    fn passed(&self) -> bool {
        !matches!(self, Self::Fail(_))
    }

    fn detail(&self) -> Option<String> {
        match self {
            Self::Pass => None,
            Self::Degraded(why) | Self::Fail(why) => Some(why.clone()),
        }
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
            for (id, endpoint) in service.endpoints.iter().enumerate() {
                let own = endpoint.health_check.as_deref();
                let Some(config) = own.or(service.policy.health_check.as_ref()) else { continue };
                let judge = config.plugin.as_deref().and_then(|name| judge_for(snapshot, name, id, endpoint));
                let tls = endpoint.conns.settings().tls.clone();
                let http2 = matches!(service.transport, Transport::Http2);
                let spec = CheckSpec { config: config.clone(), uneject, judge, tls, http2 };
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

/// The health-check plugin `name` with endpoint `id` as it will see it; `None` (checks by
/// status) when no such plugin is loaded, which configuration validation prevents.
fn judge_for(
    snapshot: &Snapshot,
    name: &str,
    id: usize,
    endpoint: &Endpoint,
) -> Option<(Arc<HealthCheckPlugin>, types::Endpoint)> {
    let plugin = snapshot.plugins.iter().find_map(|(n, p)| match p {
        Plugin::HealthCheck(h) if n == name => Some(h.clone()),
        _ => None,
    });
    if plugin.is_none() {
        tracing::warn!(plugin = name, endpoint = %endpoint.address, "no such health-check plugin; checking by status");
    }
    let view = endpoint_view(id as u32, endpoint, std::time::Instant::now(), now_millis());
    plugin.map(|p| (p, view))
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
        Health::Degraded => 2,
    }
}

/// The state after a verdict, given the current state and the streak of consecutive
/// passing (or failing) verdicts it ends. Degraded counts as passing for the thresholds.
fn next_health(current: Health, verdict: &Verdict, streak: u32, cfg: &HealthCheckConfig) -> Health {
    let passed = verdict.passed();
    let up = match current {
        // The first completed check decides at once.
        Health::Unknown => passed,
        Health::Healthy | Health::Degraded => passed || streak < cfg.unhealthy_threshold,
        Health::Unhealthy => passed && streak >= cfg.healthy_threshold,
    };
    match (up, verdict) {
        (false, _) => Health::Unhealthy,
        (true, Verdict::Pass) => Health::Healthy,
        (true, Verdict::Degraded(_)) => Health::Degraded,
        // A failure below the threshold keeps the current serving state.
        (true, Verdict::Fail(_)) => current,
    }
}

/// Turns a probe's outcome into a verdict, asking the plugin when there is one.
fn judge(
    outcome: ProbeOutcome,
    judge: Option<&(Arc<HealthCheckPlugin>, types::Endpoint)>,
    stats: &EndpointStats,
    cfg: &HealthCheckConfig,
) -> Verdict {
    match (outcome, judge) {
        (ProbeOutcome::Pass, _) => Verdict::Pass,
        (ProbeOutcome::Answered(answer), Some((plugin, target))) => {
            let mut target = target.clone();
            refresh_live_stats(&mut target, stats, std::time::Instant::now(), now_millis());
            let probe = types::ProbeResponse {
                status: answer.status,
                headers: plugin.header_interest().list(&answer.headers),
                body: answer.body,
            };
            match plugin.judge(&target, &probe) {
                Ok(types::Health::Healthy) => Verdict::Pass,
                Ok(types::Health::Degraded(why)) => Verdict::Degraded(why),
                Ok(types::Health::Unhealthy(why)) => Verdict::Fail(why),
                Err(e) if plugin.fail == FailMode::Closed => Verdict::Fail(e.to_string()),
                // Failing open: the status decides, as without a plugin.
                Err(_) if cfg.expects(answer.status) => Verdict::Pass,
                Err(_) => Verdict::Fail(format!("status {}", answer.status)),
            }
        }
        (other, _) => Verdict::Fail(other.to_string()),
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
            outcome = probe(cfg, Target { addr, tls: spec.tls.as_deref(), http2: spec.http2 }, spec.judge.is_some()) => outcome,
        };
        let verdict = judge(outcome, spec.judge.as_ref(), &stats, cfg);
        let passed = verdict.passed();
        if passed { &counters.success } else { &counters.failure }.inc();
        streak = if last == Some(passed) { streak + 1 } else { 1 };
        last = Some(passed);
        let before = stats.health();
        let after = next_health(before, &verdict, streak, cfg);
        let detail = verdict.detail();
        if after != before {
            let why = detail.as_deref().unwrap_or("pass");
            tracing::info!(%addr, from = before.as_str(), to = after.as_str(), detail = why, "endpoint health changed");
            stats.set_health(after);
            counters.state.set(gauge_value(after));
        }
        if stats.health_detail().as_deref() != detail.as_ref() {
            stats.set_health_detail(detail);
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
        let (pass, fail) = (Verdict::Pass, Verdict::Fail("down".into()));
        assert_eq!(next_health(Health::Unknown, &fail, 1, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, &pass, 1, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, &pass, 2, &cfg), Health::Healthy);
        assert_eq!(next_health(Health::Healthy, &fail, 2, &cfg), Health::Healthy);
        assert_eq!(next_health(Health::Healthy, &fail, 3, &cfg), Health::Unhealthy);
    }

    #[test]
    fn degraded_serves_and_counts_as_passing() {
        let cfg =
            HealthCheckConfig { healthy_threshold: 2, unhealthy_threshold: 2, ..toml::from_str("").expect("defaults") };
        let (degraded, fail) = (Verdict::Degraded("slow".into()), Verdict::Fail("down".into()));
        assert_eq!(next_health(Health::Unknown, &degraded, 1, &cfg), Health::Degraded);
        assert_eq!(next_health(Health::Healthy, &degraded, 1, &cfg), Health::Degraded);
        assert_eq!(next_health(Health::Degraded, &fail, 1, &cfg), Health::Degraded);
        assert_eq!(next_health(Health::Degraded, &fail, 2, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, &degraded, 1, &cfg), Health::Unhealthy);
        assert_eq!(next_health(Health::Unhealthy, &degraded, 2, &cfg), Health::Degraded);
        assert_eq!(next_health(Health::Degraded, &Verdict::Pass, 1, &cfg), Health::Healthy);
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
