//! Reads the package name and version from `wit/plugin.wit`, the file the bindings (here and in
//! the host) are generated from, so that the export names the SDK writes by hand
//! (`wasmesh:plugin/lifecycle@<version>#init`) follow the WIT without repeating its version.
//! Writes `$OUT_DIR/wit_package.rs`, included by `src/lib.rs`.
//!
//! Also sets `cfg(world)` when one world's feature is enabled (the items every world has, such as
//! `Interest` and `export!`), and refuses more than one: each world's bindings define the same
//! lifecycle export, which a component holds once.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(world)");
    let worlds: Vec<&str> = ["router", "filter", "balancer", "health-check"]
        .into_iter()
        .filter(|w| std::env::var_os(format!("CARGO_FEATURE_{}", w.to_uppercase().replace('-', "_"))).is_some())
        .collect();
    match worlds[..] {
        [] => {}
        [_] => println!("cargo::rustc-cfg=world"),
        _ => panic!(
            "wasmesh-plugin-sdk: features {worlds:?} are enabled together; a plugin implements one world, so enable \
             one (in a workspace, build one plugin per cargo invocation: features are unified across packages)"
        ),
    }

    let wit = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../../wit/plugin.wit");
    println!("cargo::rerun-if-changed={}", wit.display());
    let text = std::fs::read_to_string(&wit).unwrap_or_else(|e| panic!("{}: {e}", wit.display()));
    // `package wasmesh:plugin@0.5.0;`
    let package = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package ")?.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{}: no `package <name>@<version>;` line", wit.display()));
    let (name, version) =
        package.split_once('@').unwrap_or_else(|| panic!("{}: package `{package}` has no version", wit.display()));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("wit_package.rs");
    let code = format!(
        r#"/// The WIT package the plugin worlds belong to, as `wit/plugin.wit` declares it.
pub const WIT_PACKAGE: &str = "{package}";

/// The export name of interface `$name` of the WIT package: `{name}/<name>@{version}`.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_interface {{
    ($name:ident) => {{
        concat!("{name}/", stringify!($name), "@{version}")
    }};
}}
"#
    );
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
