//! The downstream HTTP/1.1 fast path's request head parser. See `wasmesh::fuzzing::http1_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::http1_request(data));
