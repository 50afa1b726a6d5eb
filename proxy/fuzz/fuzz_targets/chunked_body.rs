//! The upstream HTTP/1.1 body decoder: chunked, length and close-delimited framing. See `wasmesh::fuzzing::chunked_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::chunked_body(data));
