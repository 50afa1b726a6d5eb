//! The `wasmesh` command line: `check` accepts the shipped examples and rejects broken files
//! with the file, line and field at fault.

use std::path::Path;
use std::process::Command;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmesh")).arg("check").arg(&path).output().expect("run wasmesh");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn shipped_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["examples/quickstart/wasmesh.toml", "benches/peers.toml", "benches/peers-plugins.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmesh")).arg("check").arg(root.join(file)).output().expect("run");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn errors_name_the_file_line_and_field() {
    let service = "[[services]]\nname = \"s\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n";
    let cases: &[(&str, &str)] = &[
        // Syntax error.
        ("[admin\nlisten = 1\n", "FILE:1"),
        // Unknown field, with its path.
        (
            &format!("{service}\n[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbogus = 1\n"),
            "FILE:8: listeners[0].bogus: unknown field `bogus`",
        ),
        // Bad value type deep inside.
        (&format!("{service}[services.timeouts]\nconnect = \"soon\"\n"), "FILE:5: services[0].timeouts.connect:"),
        // A dangling reference.
        (
            &format!("{service}\n[[routes]]\nname = \"r\"\nservice = \"nope\"\n"),
            "FILE:7: routes[0].service: unknown service `nope`",
        ),
        // Out of range.
        (
            "[[services]]\nname = \"s\"\nendpoints = [{ address = \"127.0.0.1:1\", weight = 0 }]\n",
            "FILE:3: services[0].endpoints[0].weight: 0 is out of range",
        ),
        // A name reserved for the proxy's own route tables.
        (
            "[[listeners]]\nname = \"@call\"\nlisten = \"127.0.0.1:1\"\n",
            "FILE:2: listeners[0].name: listener name `@call`",
        ),
        // An exposed admin API without a token.
        ("[admin]\nlisten = \"0.0.0.0:10010\"\n", "FILE:2: admin.listen: 0.0.0.0:10010 is not a loopback address"),
        // Resilience settings: the failure window's maximum is named, nonsense is refused.
        (
            &format!("{service}[services.circuit_breaker.failure_rate]\nwindow = \"2h\"\n"),
            "FILE:5: services[0].circuit_breaker.failure_rate.window: 2h is longer than the maximum, 1h",
        ),
        (
            &format!("{service}[services.circuit_breaker.failure_rate]\nwindow = \"1500ms\"\n"),
            "FILE:5: services[0].circuit_breaker.failure_rate.window: 1s 500ms is not a whole number of seconds",
        ),
        (
            &format!("{service}[services.circuit_breaker.failure_rate]\nenabled = false\nthreshold_percent = 0\n"),
            "FILE:6: services[0].circuit_breaker.failure_rate.threshold_percent: 0 is out of range 1..=100",
        ),
        (
            &format!("{service}[services.circuit_breaker.failure_rate]\nenabled = \"no\"\n"),
            "FILE:5: services[0].circuit_breaker.failure_rate.enabled: invalid type: string \"no\", expected a boolean",
        ),
        (
            &format!("{service}[services.outlier_detection]\nconsecutive_5xx = 0\nconsecutive_gateway_failure = 0\n"),
            "FILE:6: services[0].outlier_detection.consecutive_gateway_failure: consecutive_5xx and \
             consecutive_gateway_failure are both 0, so nothing would be ejected: turn outlier detection off with \
             `enabled = false`",
        ),
        (
            &format!("{service}[services.outlier_detection]\nmax_ejection_percent = 150\n"),
            "FILE:5: services[0].outlier_detection.max_ejection_percent: 150 is more than 100",
        ),
        // Tracing settings.
        ("[tracing]\nsample_ratio = 1.5\n", "FILE:2: tracing.sample_ratio: must be between 0 and 1"),
        (
            "[tracing]\notlp_endpoint = \"grpc://collector:4317\"\n",
            "FILE:2: tracing.otlp_endpoint: must be an http:// URL with a host",
        ),
    ];
    for (text, want) in cases {
        let (code, _, stderr) = check(text);
        assert_eq!(code, 2, "{text}\n{stderr}");
        assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
    }
}

#[test]
fn every_example_plugin_passes_its_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = root.join("plugins/target/wasm32-wasip2/release");
    for (plugin, wasm) in [
        ("canary-router", "canary_router"),
        ("header-filter", "header_filter"),
        ("fault-filter", "fault_filter"),
        ("json-health", "json_health"),
        ("zone-balancer", "zone_balancer"),
    ] {
        let wasm = built.join(format!("{wasm}.wasm"));
        assert!(wasm.exists(), "{} missing: run ./plugins/build.sh first", wasm.display());
        let out = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
            .args(["plugin", "test", "--plugin"])
            .arg(&wasm)
            .arg("--fixture")
            .arg(root.join("plugins").join(plugin).join("fixtures.toml"))
            .output()
            .expect("run wasmesh plugin test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{plugin}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(", 0 failed"), "{plugin}:\n{stdout}");
        assert!(!stdout.contains("FAIL"), "{plugin}:\n{stdout}");
    }
}

#[test]
fn a_failed_expectation_fails_the_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = dir.path().join("wrong.toml");
    std::fs::write(
        &fixture,
        "kind = \"router\"\nconfig = { canary = \"v2\", header = \"x-canary\" }\n[[cases]]\nname = \"wrong\"\nexpect = \"upstream v2\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(["plugin", "test", "--plugin"])
        .arg(root.join("plugins/target/wasm32-wasip2/release/canary_router.wasm"))
        .arg("--fixture")
        .arg(&fixture)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL wrong: default"));
}
