//! Route matching and path rewriting. See `wasmesh::fuzzing::routing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::routing(data));
