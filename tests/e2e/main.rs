//! End-to-end tests: the real `wasmesh` binary between real HTTP clients and backends on
//! 127.0.0.1. Every test is bounded in time and request count.

mod harness;

mod abuse;
mod bad_input;
mod balancing;
mod contracts;
mod dashboard;
mod errors;
mod mesh_api;
mod plugins;
mod prometheus;
mod protocols;
mod registries;
mod reload;
mod resilience;
mod shutdown;
mod timeouts;
mod tls;
mod tracing;
