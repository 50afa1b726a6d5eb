//! Outlier detection (passive health checking): endpoints that fail consecutively are
//! ejected from balancing for `base × times ejected`, capped, and never more than a set share
//! of a service at once.
//!
//! Precedence with active health checks (Envoy got this wrong twice, envoy#12076 and
//! envoy#31069), as wasmesh defines it:
//! - an endpoint failing active checks is out of balancing, whatever the ejection cap says
//!   (the cap limits ejections only);
//! - an ejection runs its full time even if active checks pass, unless
//!   `successful_active_health_check_uneject_host` is set;
//! - endpoints failing active checks count toward the ejection cap, so passive detection
//!   cannot take out more of a service than the cap allows on top of what is already down.

use std::time::Duration;

use super::Endpoint;
use super::endpoint::Health;
use crate::config::OutlierConfig;

/// What a response says about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The endpoint answered with a 5xx.
    pub five_xx: bool,
    /// The exchange failed at the gateway level: connect error, reset, timeout, or 502-504.
    pub gateway_failure: bool,
}

/// Records `outcome` for `endpoints[index]` and ejects it when a threshold is crossed and the
/// cap allows. Returns the ejection's length when one started.
pub fn record(
    cfg: &OutlierConfig,
    endpoints: &[Endpoint],
    index: usize,
    outcome: Outcome,
    now_ms: u64,
) -> Option<Duration> {
    let stats = &endpoints[index].stats;
    let (five_xx, gateway) = stats.record_outcome(outcome.five_xx, outcome.gateway_failure);
    let crossed = (cfg.consecutive_5xx > 0 && five_xx >= cfg.consecutive_5xx)
        || (cfg.consecutive_gateway_failure > 0 && gateway >= cfg.consecutive_gateway_failure);
    if !crossed || stats.is_ejected(now_ms) {
        return None;
    }
    let out = endpoints.iter().filter(|e| e.stats.is_ejected(now_ms) || e.stats.health() == Health::Unhealthy).count();
    // At least one endpoint may always be ejected, as Envoy allows.
    let cap = (endpoints.len() * usize::from(cfg.max_ejection_percent) / 100).max(1);
    if out >= cap {
        return None;
    }
    Some(stats.eject(now_ms, cfg.base_ejection_time, cfg.max_ejection_time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::test_support::endpoints;

    fn cfg() -> OutlierConfig {
        OutlierConfig { consecutive_5xx: 3, max_ejection_percent: 50, ..toml::from_str("").expect("defaults") }
    }

    const FAIL: Outcome = Outcome { five_xx: true, gateway_failure: false };
    const OK: Outcome = Outcome { five_xx: false, gateway_failure: false };

    #[test]
    fn consecutive_failures_eject_with_growing_length() {
        let eps = endpoints(&[1, 1, 1, 1]);
        assert_eq!(record(&cfg(), &eps, 0, FAIL, 0), None);
        assert_eq!(record(&cfg(), &eps, 0, OK, 0), None, "a success resets the streak");
        for _ in 0..2 {
            assert_eq!(record(&cfg(), &eps, 0, FAIL, 0), None);
        }
        assert_eq!(record(&cfg(), &eps, 0, FAIL, 0), Some(Duration::from_secs(30)));
        assert!(!eps[0].stats.is_routable(1_000));
        assert!(eps[0].stats.is_routable(30_001));
        for _ in 0..3 {
            record(&cfg(), &eps, 0, FAIL, 40_000);
        }
        assert!(eps[0].stats.is_ejected(40_000 + 59_000), "second ejection lasts twice as long");
    }

    #[test]
    fn the_cap_counts_actively_unhealthy_endpoints_and_never_readmits_them() {
        let eps = endpoints(&[1, 1, 1, 1]);
        eps[1].stats.set_health(Health::Unhealthy);
        for _ in 0..3 {
            record(&cfg(), &eps, 0, FAIL, 0);
        }
        assert!(eps[0].stats.is_ejected(1), "1 unhealthy + 1 ejected = 50%: allowed");
        for _ in 0..3 {
            record(&cfg(), &eps, 2, FAIL, 0);
        }
        assert!(!eps[2].stats.is_ejected(1), "a third would exceed the 50% cap");
        assert!(!eps[1].stats.is_routable(1), "unhealthy stays out regardless of the cap");
    }
}
