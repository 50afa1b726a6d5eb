//! Retry decisions: which outcomes are retried, exponential backoff with full jitter, and
//! which requests may be retried at all.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::{RetryConfig, RetryOn};

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// No connection could be made: the request never reached the upstream.
    ConnectFailure,
    /// The connection failed after the request was (possibly) sent.
    Reset,
    /// The attempt ran out of its per-try time.
    Timeout,
    /// The upstream answered with this status.
    Status(StatusCode),
}

/// Whether `attempt` should be retried under `cfg` for a request with `method`.
pub fn should_retry(cfg: &RetryConfig, method: &Method, attempt: Attempt) -> bool {
    let reached_upstream = attempt != Attempt::ConnectFailure;
    if reached_upstream && !cfg.retry_non_idempotent && !is_idempotent(method) {
        return false;
    }
    cfg.retry_on.iter().any(|on| match (on, attempt) {
        (RetryOn::ConnectFailure, Attempt::ConnectFailure) => true,
        (RetryOn::Reset, Attempt::Reset) => true,
        (RetryOn::GatewayError, Attempt::ConnectFailure | Attempt::Reset | Attempt::Timeout) => true,
        (RetryOn::GatewayError, Attempt::Status(s)) => matches!(s.as_u16(), 502..=504),
        (RetryOn::FiveXx, Attempt::Status(s)) => s.is_server_error(),
        (RetryOn::FiveXx, Attempt::ConnectFailure | Attempt::Reset | Attempt::Timeout) => true,
        (RetryOn::RetriableStatusCodes, Attempt::Status(s)) => cfg.retriable_status_codes.contains(&s.as_u16()),
        _ => false,
    })
}

/// The endpoints a request has tried, by index: the first 64 in an inline word, the rest in a
/// heap bitmap made only when a retry on a service that large leaves one of them, so the
/// common request allocates nothing.
#[derive(Debug, Default)]
pub struct Tried {
    first: u64,
    rest: Vec<u64>,
}

impl Tried {
    /// Marks endpoint `idx` as tried.
    pub fn insert(&mut self, idx: usize) {
        match idx.checked_sub(64) {
            None => self.first |= 1 << idx,
            Some(past) => {
                let word = past / 64;
                if self.rest.len() <= word {
                    self.rest.resize(word + 1, 0);
                }
                self.rest[word] |= 1 << (past % 64);
            }
        }
    }

    /// Whether endpoint `idx` was tried.
    pub fn contains(&self, idx: usize) -> bool {
        match idx.checked_sub(64) {
            None => self.first & (1 << idx) != 0,
            Some(past) => self.rest.get(past / 64).is_some_and(|w| w & (1 << (past % 64)) != 0),
        }
    }

    /// Whether no endpoint was tried yet.
    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.rest.is_empty()
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The wait before retry number `retry` (1-based): a random time up to
/// `min(base × 2^(retry-1), max)` ("full jitter").
pub fn backoff(cfg: &RetryConfig, retry: u32) -> Duration {
    let ceiling = cfg.backoff_base.saturating_mul(1 << (retry.saturating_sub(1)).min(16)).min(cfg.backoff_max);
    Duration::from_nanos(fastrand::u64(..=ceiling.as_nanos() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        toml::from_str("retry_on = [\"connect-failure\", \"5xx\"]").expect("valid")
    }

    #[test]
    fn non_idempotent_requests_retry_only_if_they_never_left() {
        let c = cfg();
        assert!(should_retry(&c, &Method::POST, Attempt::ConnectFailure));
        assert!(!should_retry(&c, &Method::POST, Attempt::Status(StatusCode::BAD_GATEWAY)));
        assert!(should_retry(&c, &Method::GET, Attempt::Status(StatusCode::BAD_GATEWAY)));
        let forced = RetryConfig { retry_non_idempotent: true, ..cfg() };
        assert!(should_retry(&forced, &Method::POST, Attempt::Status(StatusCode::BAD_GATEWAY)));
    }

    #[test]
    fn only_listed_conditions_retry() {
        let c: RetryConfig =
            toml::from_str("retry_on = [\"retriable-status-codes\"]\nretriable_status_codes = [409]").expect("valid");
        assert!(should_retry(&c, &Method::GET, Attempt::Status(StatusCode::CONFLICT)));
        assert!(!should_retry(&c, &Method::GET, Attempt::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!should_retry(&c, &Method::GET, Attempt::Reset));
    }

    #[test]
    fn tried_endpoints_are_remembered_past_the_first_64() {
        let mut tried = Tried::default();
        assert!(tried.is_empty());
        for idx in [0, 63, 64, 127, 128, 1000] {
            assert!(!tried.contains(idx));
            tried.insert(idx);
            assert!(tried.contains(idx), "{idx}");
        }
        assert!(!tried.is_empty());
        assert!((1..63).chain(65..127).chain(129..1000).chain(1001..1100).all(|i| !tried.contains(i)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = cfg();
        for _ in 0..100 {
            assert!(backoff(&c, 1) <= Duration::from_millis(25));
            assert!(backoff(&c, 3) <= Duration::from_millis(100));
            assert!(backoff(&c, 30) <= Duration::from_millis(250));
        }
    }
}
