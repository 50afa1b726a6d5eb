//! The upstream HTTP/1.1 response head parser, its framing and raw header lines. See `wasmesh::fuzzing::upstream_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::upstream_response(data));
