//! The packed plugin heads and mutations, the proxy's side against the plugin SDK's. See
//! `wasmesh::fuzzing::plugin_head`.
#![no_main]

use plugin_sdk::{Changes, Request, Response};
use wasmesh::fuzzing::{PluginSide, Unpacked};
use wasmesh::plugin::Change;

/// The SDK's readers and writer.
struct Sdk;

fn unpacked(request: &Request) -> Unpacked {
    Unpacked {
        fields: [request.method(), request.authority(), request.path(), request.client_addr()].map(str::to_owned),
        headers: request.headers().map(|(name, value)| (name.to_owned(), value.to_vec())).collect(),
    }
}

impl PluginSide for Sdk {
    fn request(&self, packed: Vec<u8>) -> Unpacked {
        unpacked(&Request::new(packed))
    }

    fn response(&self, packed: Vec<u8>) -> (Unpacked, u16, Vec<(String, Vec<u8>)>) {
        let response = Response::new(packed);
        let headers = response.headers().map(|(name, value)| (name.to_owned(), value.to_vec())).collect();
        (unpacked(response.request()), response.status(), headers)
    }

    fn pack(&self, changes: &[Change<'_>]) -> Vec<u8> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        changes
            .iter()
            .fold(Changes::new(), |packed, change| match *change {
                Change::Set(name, value) => packed.set(&text(name), value),
                Change::Append(name, value) => packed.append(&text(name), value),
                Change::Remove(name) => packed.remove(&text(name)),
                Change::Path(path) => packed.path(&text(path)),
            })
            .into()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmesh::fuzzing::plugin_head(data, Some(&Sdk)));
