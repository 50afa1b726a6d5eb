//! Endpoint selection for one attempt: which endpoints may take a request (health, ejection,
//! panic mode), which it should avoid (those its earlier attempts tried), and who chooses among
//! the rest (the service's balancer, or its balancer plugin).

use super::retry::Tried;
use crate::config::FailMode;
use crate::plugin::{BalancerPlugin, HookCalls, PackedRequest};
use crate::snapshot::Service;
use crate::upstream::balance::PickContext;
use crate::upstream::endpoint::Health;
use crate::upstream::plugin_view::endpoint_view;

/// Chooses an endpoint: routable ones (not failing active checks, not ejected; degraded ones
/// only while no healthy one is routable) unless too few are, in which case all (panic mode,
/// as Envoy); endpoints already tried are avoided while others remain. A balancer plugin,
/// when the service has one and `head` is the request packed for it, chooses among the same
/// candidates. `Ok(None)`: no endpoint may take the request; `Err`: the balancer plugin failed
/// and fails closed.
pub fn pick<'s>(
    service: &'s Service,
    ctx: &PickContext,
    now_ms: u64,
    tried: &Tried,
    head: Option<&PackedRequest>,
    hooks: &mut impl HookCalls,
) -> Result<Option<usize>, &'s BalancerPlugin> {
    let endpoints = &service.endpoints;
    let filter = service.filters_endpoints();
    let routable = |i: usize| !filter || endpoints[i].stats.is_routable(now_ms);
    let degraded = |i: usize| filter && endpoints[i].stats.health() == Health::Degraded;
    let (mut up, mut preferred) = (0, 0);
    if filter {
        for i in (0..endpoints.len()).filter(|&i| routable(i)) {
            up += 1;
            preferred += usize::from(!degraded(i));
        }
    }
    let panic = filter && up * 100 < endpoints.len() * usize::from(service.policy.panic_threshold);
    let avoid_degraded = preferred > 0 && preferred < up;
    let allowed = |i: usize| panic || (routable(i) && !(avoid_degraded && degraded(i)));
    let untried = |i: usize| !tried.contains(i);
    if let (Some(plugin), Some(head)) = (&service.balancer_plugin, head) {
        let mut ids: Vec<usize> = (0..endpoints.len()).filter(|&i| allowed(i) && untried(i)).collect();
        if ids.is_empty() && !tried.is_empty() {
            ids = (0..endpoints.len()).filter(|&i| allowed(i)).collect();
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let candidates: Vec<_> = ids.iter().map(|&i| endpoint_view(i as u32, &endpoints[i], ctx.now, now_ms)).collect();
        match hooks.plugin_call(plugin.name(), "pick", || plugin.pick(head, &candidates)) {
            Ok(Some(choice)) if (choice as usize) < ids.len() => return Ok(Some(ids[choice as usize])),
            // Declined: the service's own policy picks.
            Ok(None) => {}
            Ok(Some(choice)) => {
                tracing::debug!(plugin = plugin.name(), choice, candidates = ids.len(), "balancer chose no candidate");
                if plugin.fail == FailMode::Closed {
                    return Err(plugin);
                }
            }
            Err(_) if plugin.fail == FailMode::Closed => return Err(plugin),
            Err(_) => {}
        }
    }
    Ok(service
        .balancer
        .pick(ctx, endpoints, &|i| allowed(i) && untried(i))
        .or_else(|| if tried.is_empty() { None } else { service.balancer.pick(ctx, endpoints, &allowed) }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::clock::now_millis;
    use crate::snapshot::{Carried, Snapshot};

    /// Runs hooks and records nothing.
    struct Untraced;

    impl HookCalls for Untraced {
        fn plugin_call<R>(&mut self, _: &str, _: &'static str, call: impl FnOnce() -> R) -> R {
            call()
        }
    }

    /// A snapshot with one service of `n` endpoints balanced by `balance` (`extra`: more keys).
    fn snapshot(n: usize, balance: &str, extra: &str) -> Snapshot {
        let endpoints: Vec<String> = (0..n).map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 20_000 + i)).collect();
        let text = format!(
            "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[routes]]\nname = \"r\"\nservice = \"s\"\n\
             [[services]]\nname = \"s\"\nbalance = \"{balance}\"\n{extra}\nendpoints = [{}]\n",
            endpoints.join(", ")
        );
        let config = crate::config::parse(std::path::Path::new("test.toml"), &text).expect("valid configuration");
        let metrics = crate::telemetry::Metrics::new();
        let assets = crate::snapshot::Assets::default();
        crate::snapshot::build(Arc::new(config), &[], &assets, &Arc::default(), 1, &mut Carried::default(), &metrics)
    }

    #[test]
    fn every_try_gets_a_different_endpoint_on_a_service_of_more_than_64() {
        const ENDPOINTS: usize = 100;
        for (balance, extra, hash) in [
            ("ring_hash", "hash_key = { source = \"header\", name = \"x-user\" }", Some(0x5eed)),
            ("random", "", None),
            ("least_request", "", None),
        ] {
            let snap = snapshot(ENDPOINTS, balance, extra);
            let service = &snap.services[0];
            let ctx = PickContext { hash, now: Instant::now() };
            let mut tried = Tried::default();
            for attempt in 0..ENDPOINTS {
                let idx =
                    pick(service, &ctx, now_millis(), &tried, None, &mut Untraced).ok().flatten().expect("a pick");
                assert!(!tried.contains(idx), "{balance}: attempt {attempt} picked endpoint {idx} again");
                tried.insert(idx);
            }
            let again = pick(service, &ctx, now_millis(), &tried, None, &mut Untraced).ok().flatten();
            assert!(again.is_some(), "{balance}: once every endpoint was tried, one is tried again");
        }
    }
}
