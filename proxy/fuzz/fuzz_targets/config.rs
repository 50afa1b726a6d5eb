//! The TOML configuration loader with its validation. See `wasmesh::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::config(data));
