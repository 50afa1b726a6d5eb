//! A request's way to a service: admission by the service's breaker and limits, the choice of
//! an endpoint for each attempt (`select.rs`: health, panic mode, endpoints already tried, the
//! balancer plugin), the attempts themselves with their retries (`attempts.rs`, beside the
//! retry rules of `retry.rs`), and the request's in-flight count (`in_flight.rs`).
//!
//! It reads the request's [`crate::snapshot::Snapshot`] and drives the endpoints, pools and
//! clients of [`crate::upstream`], which the snapshot is built from.

pub mod attempts;
pub mod in_flight;
pub mod retry;
pub mod select;
