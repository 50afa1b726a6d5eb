//! Endpoints and the per-endpoint live statistics that outlive a snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::uri::Authority;

use super::conn_pool::{ConnPool, ConnSettings};
use crate::clock::nanos_at;

/// One upstream endpoint as a snapshot sees it: immutable except for its shared [`EndpointStats`].
#[derive(Debug)]
pub struct Endpoint {
    /// Socket address.
    pub address: SocketAddr,
    /// `address` as a URI authority, built once so forwarding does not format it per request.
    pub authority: Authority,
    /// Relative share of traffic.
    pub weight: u32,
    /// Free-form labels (zone, version).
    pub metadata: BTreeMap<String, String>,
    /// Live statistics, carried over across reloads while the endpoint exists.
    pub stats: Arc<EndpointStats>,
    /// Idle HTTP/1.1 connections, carried over across reloads like `stats`.
    pub conns: Arc<ConnPool>,
    /// The endpoint's own active health check (a registered instance's), used instead of its
    /// service's.
    pub health_check: Option<Arc<crate::config::HealthCheckConfig>>,
}

impl Endpoint {
    /// Builds an endpoint around existing (or fresh) state.
    pub fn new(
        address: SocketAddr,
        weight: u32,
        metadata: BTreeMap<String, String>,
        stats: Arc<EndpointStats>,
        conns: Arc<ConnPool>,
    ) -> Self {
        let authority =
            Authority::try_from(address.to_string().as_str()).expect("a socket address is always a valid authority");
        Self { address, authority, weight, metadata, stats, conns, health_check: None }
    }

    /// An endpoint with fresh statistics and an empty, uncounted pool: for tools and benches.
    pub fn standalone(address: SocketAddr, weight: u32) -> Self {
        let settings = ConnSettings {
            tls: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle: 16,
        };
        let conns = ConnPool::new(address, settings, Default::default(), Default::default());
        Self::new(address, weight, BTreeMap::new(), Arc::default(), Arc::new(conns))
    }
}

/// Time constant of the latency average: how fast old samples fade (Linkerd uses 10 s).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for an endpoint with no samples yet (Linkerd's default RTT).
const EWMA_DEFAULT: Duration = Duration::from_millis(30);

/// Active health-check verdict of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check has completed yet (or checks are off).
    Unknown,
    /// Passing.
    Healthy,
    /// Failing: taken out of balancing whatever the ejection cap says.
    Unhealthy,
    /// Passing, but a health-check plugin called it degraded: chosen only while no healthy
    /// endpoint is routable (as Envoy treats degraded hosts).
    Degraded,
}

impl Health {
    /// Lower-case name, as the admin API and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Degraded => "degraded",
        }
    }
}

/// Live, lock-free statistics of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    health: AtomicU8,
    /// Outlier ejection ends at this [`crate::clock::now_millis`] value; 0 when not ejected.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// The last check's reason for a degraded or unhealthy verdict; read by the admin views only.
    health_detail: ArcSwapOption<String>,
    /// Peak-EWMA latency in nanoseconds, stored as `f64` bits.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since the clock base (`clock::nanos_at`).
    ewma_stamp: AtomicU64,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            health: AtomicU8::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            health_detail: ArcSwapOption::empty(),
            ewma_ns: AtomicU64::new((EWMA_DEFAULT.as_nanos() as f64).to_bits()),
            ewma_stamp: AtomicU64::new(nanos_at(Instant::now())),
        }
    }
}

impl EndpointStats {
    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as started.
    pub fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request as finished.
    pub fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The active health-check verdict.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            3 => Health::Degraded,
            _ => Health::Unknown,
        }
    }

    /// Sets the active health-check verdict.
    pub fn set_health(&self, health: Health) {
        let v = match health {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
            Health::Degraded => 3,
        };
        self.health.store(v, Ordering::Relaxed);
    }

    /// Why the last check judged the endpoint degraded or unhealthy.
    pub fn health_detail(&self) -> Option<Arc<String>> {
        self.health_detail.load_full()
    }

    /// Records why the last check judged as it did (`None` when it passed plainly).
    pub fn set_health_detail(&self, detail: Option<String>) {
        self.health_detail.store(detail.map(Arc::new));
    }

    /// Whether an outlier ejection is in force at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Whether balancing may choose this endpoint at `now_ms`: not failing active checks and
    /// not ejected.
    pub fn is_routable(&self, now_ms: u64) -> bool {
        self.health() != Health::Unhealthy && !self.is_ejected(now_ms)
    }

    /// Times this endpoint has been ejected.
    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Ends an ejection now.
    pub fn uneject(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
    }

    /// Starts an ejection lasting `base × times ejected`, capped at `max`.
    pub fn eject(&self, now_ms: u64, base: Duration, max: Duration) -> Duration {
        let n = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(n).min(max);
        self.ejected_until.store(now_ms + length.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        length
    }

    /// Records one response's outcome for outlier detection; returns the consecutive
    /// (5xx, gateway failure) counts after it.
    pub fn record_outcome(&self, five_xx: bool, gateway_failure: bool) -> (u32, u32) {
        let bump = |counter: &AtomicU32, hit: bool| {
            if hit {
                counter.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                // A streak is usually zero already: reading leaves the cache line shared
                // between the cores that answer this endpoint's requests.
                if counter.load(Ordering::Relaxed) != 0 {
                    counter.store(0, Ordering::Relaxed);
                }
                0
            }
        };
        (bump(&self.consecutive_5xx, five_xx), bump(&self.consecutive_gateway, gateway_failure))
    }

    /// Records a latency sample. A sample above the average replaces it at once (the
    /// "peak" in peak-EWMA, so a slowing endpoint is avoided quickly); lower samples
    /// pull it down gradually.
    pub fn observe_latency(&self, now: Instant, rtt: Duration) {
        let now_ns = nanos_at(now);
        let rtt = rtt.as_nanos() as f64;
        let current = self.decayed_ewma(now_ns);
        let next = if rtt > current {
            rtt
        } else {
            let elapsed = now_ns.saturating_sub(self.ewma_stamp.load(Ordering::Relaxed)) as f64;
            let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            current * w + rtt * (1.0 - w)
        };
        // Racing writers may lose a sample; the average tolerates that and stays lock-free.
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_stamp.store(now_ns, Ordering::Relaxed);
    }

    /// The latency average in nanoseconds, decayed for the time since its last sample so
    /// that an endpoint nobody has used lately becomes attractive again.
    pub fn ewma_nanos(&self, now: Instant) -> f64 {
        self.decayed_ewma(nanos_at(now))
    }

    fn decayed_ewma(&self, now_ns: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.ewma_stamp.load(Ordering::Relaxed)) as f64;
        ewma * (-elapsed / EWMA_DECAY.as_nanos() as f64).exp()
    }
}
