//! Circuit breaking that breaks: per-service concurrency limits that shed excess load at once,
//! and a failure-rate breaker (closed → open → half-open → closed).
//!
//! All state is atomic and lives beside the snapshot, keyed by service, so a reload keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{CircuitBreakerConfig, FailureRateConfig};

/// Slots of the failure window, one per bucket of time: one more than the window ever counts,
/// so the bucket being filled never shares a slot with the oldest bucket counted.
const WINDOW_SLOTS: usize = 64;

/// How a failure window of `window` is kept: in buckets of one second, or, for a window longer
/// than the slots hold at a second apiece (63 s), in buckets of `window / 63` rounded up to
/// whole seconds. Returns the bucket length in milliseconds and how many buckets the window
/// counts, the one being filled included; they never span more than `window`.
#[inline]
fn window_buckets(window: Duration) -> (u64, u64) {
    let secs = window.as_secs().max(1);
    let width = secs.div_ceil(WINDOW_SLOTS as u64 - 1);
    (width * 1000, secs / width)
}

/// Why a request was refused without reaching an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `max_requests` in flight already.
    MaxRequests,
    /// `max_pending_requests` waiting for a connection already.
    MaxPending,
    /// `max_connections` open already.
    MaxConnections,
    /// The failure-rate breaker is open.
    Open,
}

impl Shed {
    /// The limit's name, as headers and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxRequests => "max_requests",
            Self::MaxPending => "max_pending_requests",
            Self::MaxConnections => "max_connections",
            Self::Open => "circuit_open",
        }
    }
}

/// Breaker position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Requests fail fast.
    Open,
    /// A few probe requests are let through.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Which bucket of time (`now_ms / bucket length`) the counts belong to.
    bucket: AtomicU64,
    ok: AtomicU32,
    failed: AtomicU32,
}

/// Live resilience state of one service.
#[derive(Debug)]
pub struct ServiceState {
    in_flight: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    /// Open upstream connections, each holding a [`ConnSlot`].
    conns: Arc<AtomicU32>,
    state: AtomicU8,
    opened_at_ms: AtomicU64,
    probes_admitted: AtomicU32,
    probes_ok: AtomicU32,
    window: Box<[Slot]>,
    /// The bucket length the window's slots were filled with, so a new one clears them.
    bucket_ms: AtomicU64,
}

impl Default for ServiceState {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            conns: Arc::default(),
            state: AtomicU8::new(0),
            opened_at_ms: AtomicU64::new(0),
            probes_admitted: AtomicU32::new(0),
            probes_ok: AtomicU32::new(0),
            window: (0..WINDOW_SLOTS).map(|_| Slot::default()).collect(),
            bucket_ms: AtomicU64::new(0),
        }
    }
}

/// A request admitted to a service; counted in flight until dropped.
#[derive(Debug)]
pub struct Admission {
    state: Arc<ServiceState>,
    /// Admitted as a half-open probe whose outcome is not recorded yet.
    probe: bool,
}

impl Admission {
    /// Whether the request is a half-open probe, for recording its outcome; asked once. A
    /// probe dropped before anyone asked (no endpoint, a local limit) gives its place back,
    /// or a breaker could stay half-open with every probe place taken and none coming back.
    pub fn take_probe(&mut self) -> bool {
        std::mem::take(&mut self.probe)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            let _ = self.state.probes_admitted.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// A counted slot (pending connect or retry), released on drop.
#[derive(Debug)]
pub struct Slotted<'a>(&'a AtomicU32);

impl Drop for Slotted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of a service's open (or opening) upstream connections, counted until dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<AtomicU32>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A breaker state change, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition(pub BreakerState);

fn take_slot(counter: &AtomicU32, max: u32) -> bool {
    counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
}

impl ServiceState {
    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The breaker position now.
    pub fn breaker_state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Brings the state in line with `cfg` as a snapshot is built: a breaker turned off is
    /// closed, and a window whose bucket length changed starts empty, since its slots were
    /// filled with buckets of the old length.
    pub fn configure(&self, cfg: &CircuitBreakerConfig) {
        let bucket_ms = cfg.active_failure_rate().map_or(0, |rate| window_buckets(rate.window).0);
        if bucket_ms == 0 {
            self.state.store(0, Ordering::Relaxed);
        }
        if self.bucket_ms.swap(bucket_ms, Ordering::Relaxed) != bucket_ms {
            self.clear_window();
        }
    }

    /// Admits a request or sheds it. Also moves an open breaker to half-open once its open
    /// time is over.
    pub fn admit(
        self: &Arc<Self>,
        cfg: &CircuitBreakerConfig,
        now_ms: u64,
    ) -> Result<(Admission, Option<Transition>), Shed> {
        let mut transition = None;
        let mut probe = false;
        if let Some(rate) = cfg.active_failure_rate() {
            match self.breaker_state() {
                BreakerState::Closed => {}
                BreakerState::Open => {
                    let opened = self.opened_at_ms.load(Ordering::Relaxed);
                    if now_ms < opened + rate.open_duration.as_millis() as u64 {
                        return Err(Shed::Open);
                    }
                    if self.state.compare_exchange(1, 2, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                        self.probes_admitted.store(0, Ordering::Relaxed);
                        self.probes_ok.store(0, Ordering::Relaxed);
                        transition = Some(Transition(BreakerState::HalfOpen));
                    }
                    probe = self.admit_probe(rate)?;
                }
                BreakerState::HalfOpen => probe = self.admit_probe(rate)?,
            }
        }
        if !take_slot(&self.in_flight, cfg.max_requests) {
            return Err(Shed::MaxRequests);
        }
        Ok((Admission { state: self.clone(), probe }, transition))
    }

    fn admit_probe(&self, rate: &FailureRateConfig) -> Result<bool, Shed> {
        if take_slot(&self.probes_admitted, rate.half_open_requests) { Ok(true) } else { Err(Shed::Open) }
    }

    /// Takes a slot for a request about to wait for a new connection (its own, or over
    /// HTTP/2 its endpoint's shared one).
    pub fn begin_pending(&self, cfg: &CircuitBreakerConfig) -> Result<Slotted<'_>, Shed> {
        take_slot(&self.pending, cfg.max_pending_requests).then(|| Slotted(&self.pending)).ok_or(Shed::MaxPending)
    }

    /// Reserves one of the service's `max_connections` for a connection about to open; the
    /// connection holds the reservation while it is open.
    pub fn reserve_connection(&self, cfg: &CircuitBreakerConfig) -> Result<ConnSlot, Shed> {
        take_slot(&self.conns, cfg.max_connections).then(|| ConnSlot(self.conns.clone())).ok_or(Shed::MaxConnections)
    }

    /// Takes a retry slot if the budget allows: at most `budget_percent` of the requests in
    /// flight, but never fewer than `min_concurrency`, and never more than `max_retries`.
    pub fn begin_retry(&self, budget_percent: u8, min_concurrency: u32, max_retries: u32) -> Option<Slotted<'_>> {
        let budget = (self.in_flight() as u64 * u64::from(budget_percent) / 100) as u32;
        let limit = budget.max(min_concurrency).min(max_retries);
        // `then`, not `then_some`: a `Slotted` built eagerly would release a slot never taken.
        take_slot(&self.retries, limit).then(|| Slotted(&self.retries))
    }

    /// Records an outcome; returns the breaker transition it caused, if any.
    pub fn record(&self, cfg: &CircuitBreakerConfig, success: bool, probe: bool, now_ms: u64) -> Option<Transition> {
        let rate = cfg.active_failure_rate()?;
        let (bucket_ms, _) = window_buckets(rate.window);
        let bucket = now_ms / bucket_ms;
        let slot = &self.window[(bucket % WINDOW_SLOTS as u64) as usize];
        // Read before swapping: a slot changes buckets once a second at most, and a swap on
        // every request would be one more locked instruction on the request path.
        if slot.bucket.load(Ordering::Relaxed) != bucket && slot.bucket.swap(bucket, Ordering::Relaxed) != bucket {
            slot.ok.store(0, Ordering::Relaxed);
            slot.failed.store(0, Ordering::Relaxed);
        }
        if success { &slot.ok } else { &slot.failed }.fetch_add(1, Ordering::Relaxed);

        match self.breaker_state() {
            BreakerState::HalfOpen if probe && !success => self.open(now_ms),
            BreakerState::HalfOpen if probe => {
                let ok = self.probes_ok.fetch_add(1, Ordering::Relaxed) + 1;
                if ok >= rate.half_open_requests
                    && self.state.compare_exchange(2, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                {
                    self.clear_window();
                    return Some(Transition(BreakerState::Closed));
                }
                None
            }
            BreakerState::Closed if !success => {
                // The bucket count only here: a division fewer on the success path.
                let (_, buckets) = window_buckets(rate.window);
                let (ok, failed) = self.window_counts(bucket, buckets);
                let total = ok + failed;
                let tripped = total >= u64::from(rate.minimum_requests)
                    && failed * 100 >= u64::from(rate.threshold_percent) * total;
                if tripped { self.open(now_ms) } else { None }
            }
            _ => None,
        }
    }

    fn open(&self, now_ms: u64) -> Option<Transition> {
        self.opened_at_ms.store(now_ms, Ordering::Relaxed);
        let previous = self.state.swap(1, Ordering::AcqRel);
        (previous != 1).then_some(Transition(BreakerState::Open))
    }

    /// Outcomes in the `buckets` buckets up to and including `bucket`.
    fn window_counts(&self, bucket: u64, buckets: u64) -> (u64, u64) {
        self.window
            .iter()
            .filter(|s| {
                let at = s.bucket.load(Ordering::Relaxed);
                at <= bucket && bucket - at < buckets
            })
            .fold((0, 0), |(ok, failed), s| {
                (ok + u64::from(s.ok.load(Ordering::Relaxed)), failed + u64::from(s.failed.load(Ordering::Relaxed)))
            })
    }

    fn clear_window(&self) {
        for s in self.window.iter() {
            s.ok.store(0, Ordering::Relaxed);
            s.failed.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> CircuitBreakerConfig {
        with_window(Duration::from_secs(10))
    }

    fn with_window(window: Duration) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            max_requests: 2,
            failure_rate: FailureRateConfig {
                enabled: true,
                threshold_percent: 50,
                minimum_requests: 4,
                window,
                open_duration: Duration::from_secs(5),
                half_open_requests: 2,
            },
            ..Default::default()
        }
    }

    #[test]
    fn concurrency_limit_sheds_the_excess() {
        let state = Arc::new(ServiceState::default());
        let a = state.admit(&cfg(), 0).expect("first");
        let _b = state.admit(&cfg(), 0).expect("second");
        assert_eq!(state.admit(&cfg(), 0).err(), Some(Shed::MaxRequests));
        drop(a);
        assert!(state.admit(&cfg(), 0).is_ok());
    }

    #[test]
    fn opens_on_failure_rate_then_half_opens_then_closes() {
        let (cfg, state) = (cfg(), Arc::new(ServiceState::default()));
        for _ in 0..3 {
            assert_eq!(state.record(&cfg, false, false, 1_000), None, "below minimum_requests");
        }
        assert_eq!(state.record(&cfg, false, false, 1_000), Some(Transition(BreakerState::Open)));
        assert_eq!(state.admit(&cfg, 2_000).err(), Some(Shed::Open));

        let (mut probe, t) = state.admit(&cfg, 6_001).expect("half-open probe");
        assert!(probe.take_probe());
        assert_eq!(t, Some(Transition(BreakerState::HalfOpen)));
        let (probe2, _) = state.admit(&cfg, 6_001).expect("second probe");
        assert_eq!(state.admit(&cfg, 6_001).err(), Some(Shed::Open), "only two probes");
        assert_eq!(state.record(&cfg, true, true, 6_002), None);
        assert_eq!(state.record(&cfg, true, true, 6_002), Some(Transition(BreakerState::Closed)));
        drop((probe, probe2));
        assert!(state.admit(&cfg, 6_003).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let (cfg, state) = (cfg(), Arc::new(ServiceState::default()));
        for _ in 0..4 {
            state.record(&cfg, false, false, 1_000);
        }
        let _probe = state.admit(&cfg, 7_000).expect("probe");
        assert_eq!(state.record(&cfg, false, true, 7_001), Some(Transition(BreakerState::Open)));
        assert_eq!(state.admit(&cfg, 8_000).err(), Some(Shed::Open));
    }

    #[test]
    fn connection_and_pending_limits_are_reservations() {
        let cfg = CircuitBreakerConfig { max_connections: 2, max_pending_requests: 1, ..Default::default() };
        let state = ServiceState::default();
        let conns: Vec<_> = (0..3).filter_map(|_| state.reserve_connection(&cfg).ok()).collect();
        assert_eq!(conns.len(), 2);
        assert_eq!(state.reserve_connection(&cfg).err(), Some(Shed::MaxConnections));
        drop(conns);
        assert!(state.reserve_connection(&cfg).is_ok(), "a closed connection frees its place");
        let pending = state.begin_pending(&cfg).expect("one may wait");
        assert_eq!(state.begin_pending(&cfg).err(), Some(Shed::MaxPending));
        drop(pending);
        assert!(state.begin_pending(&cfg).is_ok());
    }

    #[test]
    fn a_window_longer_than_the_slots_counts_all_of_it() {
        let (cfg, state) = (with_window(Duration::from_secs(120)), Arc::new(ServiceState::default()));
        state.configure(&cfg);
        for _ in 0..3 {
            assert_eq!(state.record(&cfg, false, false, 1_000), None);
        }
        assert_eq!(
            state.record(&cfg, false, false, 100_000),
            Some(Transition(BreakerState::Open)),
            "failures 99 s apart are in one 120 s window"
        );

        let (cfg, state) = (with_window(Duration::from_secs(120)), Arc::new(ServiceState::default()));
        for _ in 0..3 {
            state.record(&cfg, false, false, 1_000);
        }
        assert_eq!(state.record(&cfg, false, false, 122_000), None, "121 s later they have left the window");
    }

    #[test]
    fn window_buckets_never_span_more_than_the_window_nor_alias_a_slot() {
        assert_eq!(window_buckets(Duration::from_secs(10)), (1_000, 10));
        assert_eq!(window_buckets(Duration::from_secs(63)), (1_000, 63));
        assert_eq!(window_buckets(Duration::from_secs(64)), (2_000, 32));
        assert_eq!(window_buckets(Duration::from_secs(120)), (2_000, 60));
        for secs in 1..=FailureRateConfig::MAX_WINDOW.as_secs() {
            let (bucket_ms, buckets) = window_buckets(Duration::from_secs(secs));
            assert!(buckets < WINDOW_SLOTS as u64, "{secs} s: {buckets} buckets alias a slot");
            assert!(bucket_ms / 1000 * buckets <= secs, "{secs} s: counts more than the window");
            // Within one bucket of the window asked for.
            assert!(bucket_ms / 1000 * (buckets + 1) > secs, "{secs} s: counts too little");
        }
    }

    #[test]
    fn a_new_bucket_length_or_turning_off_clears_the_window() {
        let state = Arc::new(ServiceState::default());
        let long = with_window(Duration::from_secs(600));
        state.configure(&long);
        for _ in 0..3 {
            state.record(&long, false, false, 20_000);
        }
        let short = with_window(Duration::from_secs(63));
        state.configure(&short);
        // Bucket 2 of 10 s would pass for the second 2, which a 63 s window at 20 s counts.
        assert_eq!(state.record(&short, false, false, 20_000), None, "10 s buckets are not read as 1 s ones");

        for _ in 0..4 {
            state.record(&short, false, false, 21_000);
        }
        assert_eq!(state.breaker_state(), BreakerState::Open);
        let mut off = short.clone();
        off.failure_rate.enabled = false;
        state.configure(&off);
        assert_eq!(state.breaker_state(), BreakerState::Closed, "a breaker turned off does not stay open");
        assert!(state.admit(&off, 61_001).is_ok());
        assert_eq!(state.record(&off, false, false, 61_001), None, "and never opens");
    }

    #[test]
    fn a_probe_dropped_unrecorded_gives_its_place_back() {
        let (cfg, state) = (cfg(), Arc::new(ServiceState::default()));
        for _ in 0..4 {
            state.record(&cfg, false, false, 1_000);
        }
        let (lost, _) = state.admit(&cfg, 7_000).expect("probe");
        let (mut kept, _) = state.admit(&cfg, 7_000).expect("probe");
        assert_eq!(state.admit(&cfg, 7_000).err(), Some(Shed::Open), "both places taken");
        drop(lost);
        let (mut again, _) = state.admit(&cfg, 7_001).expect("the unrecorded probe's place is free again");
        assert!(kept.take_probe() && again.take_probe());
        assert!(!kept.take_probe(), "asked once");
        state.record(&cfg, true, true, 7_002);
        drop(kept);
        assert_eq!(state.admit(&cfg, 7_002).err(), Some(Shed::Open), "a recorded probe keeps its place");
        assert_eq!(state.record(&cfg, true, true, 7_003), Some(Transition(BreakerState::Closed)));
    }

    #[test]
    fn retry_budget_is_a_share_of_active_requests_with_a_floor() {
        let state = ServiceState::default();
        let held: Vec<_> = (0..3).filter_map(|_| state.begin_retry(20, 3, 10)).collect();
        assert_eq!(held.len(), 3, "the floor allows three");
        assert!(state.begin_retry(20, 3, 10).is_none());
        assert!(state.begin_retry(20, 3, 10).is_none(), "a refusal must not free a slot");
        drop(held);
        assert!(state.begin_retry(20, 3, 10).is_some());
    }
}
