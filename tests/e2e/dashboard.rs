//! The admin dashboard in a real headless Chromium (Debian's `chromium`): it loads with no
//! script errors, shows the registered and configured services, their instances and breakers,
//! the loaded plugins and the config version, and a screenshot is kept as a test artifact.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::harness::{Proxy, backends, call_json, free_port, get, plugin_toml};

/// Runs headless Chromium on `url` with `extra` arguments; returns (stdout, stderr).
fn chromium(url: &str, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().expect("temp dir");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--no-first-run", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Lets the page's fetches and first refresh run before the DOM is read.
        .arg("--virtual-time-budget=5000")
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium (Debian package chromium)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn the_dashboard_renders_the_mesh_in_chromium_without_errors() {
    let b = backends(2).await;
    let filter = plugin_toml("stamp", "filter", "header_filter.wasm", "{}", "");
    let config = format!(
        "{filter}[[routes]]\nname = \"front\"\nservice = \"catalog\"\nfilters = [\"stamp\"]\n[[services]]\nname = \"catalog\"\nendpoints = [{{ address = \"{}\" }}]\n",
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;
    let registration = json!({ "service_name": "orders", "address": "127.0.0.1", "port": b[1].addr.port() });
    let (status, body) =
        call_json("POST", &proxy.admin_url("/api/v1/mesh/v2/register"), Some(&registration), None).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.expect("request").status(), 200);
    }
    // A service whose only instance refuses connections: twenty failed calls open its breaker.
    let ghost = json!({ "service_name": "ghost", "address": "127.0.0.1", "port": free_port() });
    let (status, body) = call_json("POST", &proxy.admin_url("/api/v1/mesh/v2/register"), Some(&ghost), None).await;
    assert_eq!(status, 200, "{body}");
    let call = json!({ "service_name": "ghost", "path": "/" });
    for _ in 0..20 {
        let (_, body) = call_json("POST", &proxy.admin_url("/api/v1/mesh/v2/call"), Some(&call), None).await;
        assert_eq!(body["status"], 502, "{body}");
    }

    let page = proxy.admin_url("/dashboard");
    let (dom, log) = chromium(&page, &["--dump-dom"]);
    assert!(dom.contains("data-state=\"ready\""), "the page never finished a refresh:\n{dom}\n{log}");
    assert!(dom.contains("data-errors=\"0\""), "script errors on the page:\n{dom}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    for shown in ["orders", "catalog", "route front", "stamp", "config v", &b[1].addr.to_string()] {
        assert!(dom.contains(shown), "`{shown}` is not on the page:\n{dom}");
    }
    for breaker in ["<td class=\"breaker-open\">open</td>", "ghost (open)", "<td class=\"breaker-closed\">closed</td>"]
    {
        assert!(dom.contains(breaker), "`{breaker}` is not on the page:\n{dom}");
    }

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&page, &["--window-size=1280,800", &format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());
    println!("dashboard screenshot: {}", shot.display());
}
