//! The mesh API's JSON request bodies (register, deregister, call). See `wasmesh::fuzzing::mesh_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::mesh_api(data));
