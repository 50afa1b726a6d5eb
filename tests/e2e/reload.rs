//! Hot reload against a real wasmesh: file saves (editor-style and in place), SIGHUP and
//! `POST /reload`; refused changes that keep the old snapshot serving; listeners added and
//! removed; and 100 changes under load with zero failed requests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Proxy, backends, call_json, client, eventually, free_port, get, plugin_wasm, text};

/// Replaces `path` the way editors save: write a temporary file, then rename it over.
fn save_by_rename(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The whole file written in place (truncate and write), as `cp` or `echo >` do.
fn write_in_place(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).expect("write in place");
}

/// The configuration body (after the harness's header) pointing service `s` at `addrs`.
fn routes_to(addrs: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    format!(
        "[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nendpoints = [{}]\n",
        list.join(", ")
    )
}

/// The proxy's configuration with the harness's header (admin, log, listener) and `body`.
fn config_with(proxy: &Proxy, body: &str) -> String {
    format!("{}{body}", proxy.header)
}

/// A route `r` to service `s` at `addr` through the filter plugin `f` loaded from `wasm`.
///
/// A generous plugin deadline: on a loaded 2-core CI machine a call preempted past the default
/// fails open, which these tests would count as a lost filter, not as the reload's fault.
fn filtered(wasm: &Path, endpoints: &str) -> String {
    format!(
        "[[plugins]]\nname = \"f\"\nkind = \"filter\"\npath = \"{}\"\ntimeout = \"2s\"\n[[routes]]\nname = \"r\"\nservice = \"s\"\nfilters = [\"f\"]\n[[services]]\nname = \"s\"\nendpoints = [{endpoints}]\n",
        wasm.display()
    )
}

async fn version(proxy: &Proxy) -> u64 {
    let (_, cfg) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
    cfg["version"].as_u64().expect("version")
}

async fn applied(proxy: &Proxy) -> f64 {
    proxy.metric("wasmesh_reloads_total{outcome=\"applied\"}").await.unwrap_or(0.0)
}

async fn backend_of(proxy: &Proxy) -> String {
    let resp = get(&proxy.url("/who")).await.expect("request");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-backend"].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn saves_reload_once_and_bad_changes_are_refused_while_the_old_config_serves() {
    let b = backends(2).await;
    let proxy = Proxy::start(&routes_to(&[b[0].addr])).await;
    assert_eq!(backend_of(&proxy).await, "b0");

    // Editor-style save: exactly one reload, and the new endpoint serves.
    save_by_rename(&proxy.config_path, config_with(&proxy, &routes_to(&[b[1].addr])).as_bytes());
    eventually(Duration::from_secs(5), "the renamed file to apply", || async {
        (backend_of(&proxy).await == "b1").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(applied(&proxy).await, 1.0, "one save, one reload");

    // In-place write: exactly one more.
    write_in_place(&proxy.config_path, config_with(&proxy, &routes_to(&[b[0].addr])).as_bytes());
    eventually(Duration::from_secs(5), "the rewritten file to apply", || async {
        (backend_of(&proxy).await == "b0").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(applied(&proxy).await, 2.0, "one write, one reload");

    // Invalid TOML: refused, reported with the file and line, the old config keeps serving.
    let before = version(&proxy).await;
    write_in_place(&proxy.config_path, config_with(&proxy, "[[routes]]\nname = \"r\"\nservice = \n").as_bytes());
    let error = eventually(Duration::from_secs(5), "the refusal to be reported", || async {
        let (_, cfg) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
        cfg["last_error"]["message"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("wasmesh.toml"), "{error}");
    assert_eq!(version(&proxy).await, before);
    assert_eq!(backend_of(&proxy).await, "b0");
    assert_eq!(proxy.metric("wasmesh_reloads_total{outcome=\"rejected\"}").await, Some(1.0));

    // An invalid value, through POST /reload: 422 with the field path.
    std::fs::write(
        &proxy.config_path,
        config_with(
            &proxy,
            &routes_to(&[b[1].addr])
                .replace("name = \"s\"\nendpoints", "name = \"s\"\nbalance = \"fastest\"\nendpoints"),
        ),
    )
    .expect("write");
    let (status, outcome) = call_json("POST", &proxy.admin_url("/reload"), None, None).await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["status"], "rejected");
    assert!(outcome["error"].as_str().expect("error").contains("balance"), "{outcome}");
    assert_eq!(backend_of(&proxy).await, "b0");

    // Fixed, and applied by SIGHUP.
    std::fs::write(&proxy.config_path, config_with(&proxy, &routes_to(&[b[1].addr]))).expect("write");
    proxy.signal("HUP");
    eventually(Duration::from_secs(5), "SIGHUP to apply", || async {
        (backend_of(&proxy).await == "b1").then_some(())
    })
    .await;
    let (_, cfg) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
    assert!(cfg["last_error"].is_null(), "an applied change clears the error: {cfg}");
    assert_eq!(cfg["sources"][0]["hash"].as_str().map(str::len), Some(16), "{cfg}");
}

#[tokio::test]
async fn a_corrupt_plugin_is_refused_and_the_loaded_one_keeps_serving() {
    let b = backends(1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("filter.wasm");
    std::fs::copy(plugin_wasm("fault_filter.wasm"), &wasm).expect("copy plugin");
    let body = filtered(&wasm, &format!("{{ address = \"{}\" }}", b[0].addr));
    let proxy = Proxy::start(&body).await;
    let echoed = text(get(&proxy.url("/echo")).await.expect("request")).await;
    assert!(echoed.contains("x-fault-filter"), "{echoed}");

    save_by_rename(&wasm, b"\0asm garbage that is not a component");
    let error = eventually(Duration::from_secs(5), "the corrupt plugin to be refused", || async {
        let (_, cfg) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
        cfg["last_error"]["message"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("plugin `f`") && error.contains("filter.wasm"), "{error}");
    let echoed = text(get(&proxy.url("/echo")).await.expect("request")).await;
    assert!(echoed.contains("x-fault-filter"), "the old plugin still serves: {echoed}");

    // A valid component of another version replaces it.
    save_by_rename(&wasm, &std::fs::read(plugin_wasm("header_filter.wasm")).expect("read"));
    eventually(Duration::from_secs(10), "the new plugin to serve", || async {
        let echoed = text(get(&proxy.url("/echo")).await.expect("request")).await;
        (echoed.contains("x-request-id") && !echoed.contains("x-fault-filter")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn listeners_are_added_and_removed_by_a_reload() {
    let b = backends(1).await;
    let proxy = Proxy::start(&routes_to(&[b[0].addr])).await;
    let extra = format!("127.0.0.1:{}", free_port());
    let with_extra = config_with(
        &proxy,
        &format!("[[listeners]]\nname = \"extra\"\nlisten = \"{extra}\"\n\n{}", routes_to(&[b[0].addr])),
    );
    std::fs::write(&proxy.config_path, &with_extra).expect("write");
    let (status, outcome) = call_json("POST", &proxy.admin_url("/reload"), None, None).await;
    assert_eq!(status, 200, "{outcome}");
    let resp = get(&format!("http://{extra}/x")).await.expect("the added listener serves");
    assert_eq!(resp.status(), 200);

    // The main listener's connections were untouched; removing `extra` closes it.
    std::fs::write(&proxy.config_path, config_with(&proxy, &routes_to(&[b[0].addr]))).expect("write");
    let (status, _) = call_json("POST", &proxy.admin_url("/reload"), None, None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "the removed listener to close", || async {
        get(&format!("http://{extra}/x")).await.is_err().then_some(())
    })
    .await;
    assert_eq!(get(&proxy.url("/x")).await.expect("main still serves").status(), 200);
}

/// Writes `contents` in place slowly, as a large `cp` or a slow editor does: the file is
/// truncated, half written, and completed a moment later.
async fn write_in_place_slowly(path: &Path, contents: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("truncate");
    let half = contents.len() / 2;
    file.write_all(&contents[..half]).expect("first half");
    file.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(40)).await;
    file.write_all(&contents[half..]).expect("second half");
}

async fn rejections(proxy: &Proxy) -> (u64, String) {
    let (_, cfg) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
    let message = cfg["last_error"]["message"].as_str().unwrap_or_default().to_owned();
    (cfg["rejections_total"].as_u64().expect("rejections_total"), message)
}

/// Under load, 100 changes in a cycle of five: the configuration saved by rename, the
/// filter's `.wasm` swapped by rename, the configuration written in place slowly (truncated,
/// then completed), broken TOML written in place, and the file truncated to nothing. Endpoint
/// sets and weights alternate and the filter alternates between two components, with 4
/// connections (leaving CPU to the tests beside it). Every request succeeds and carries
/// exactly one of the two filters' marks; every good change applies, every bad one is refused
/// and shows in `GET /config`; reload latency (write to new version serving) is printed.
#[tokio::test]
async fn a_hundred_changes_under_load_fail_no_request() {
    let b = backends(3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("filter.wasm");
    let versions = [
        std::fs::read(plugin_wasm("header_filter.wasm")).expect("plugin A"),
        std::fs::read(plugin_wasm("fault_filter.wasm")).expect("plugin B"),
    ];
    std::fs::write(&wasm, &versions[0]).expect("plugin");
    let body = |endpoints: &str| filtered(&wasm, endpoints);
    let two = format!("{{ address = \"{}\" }}, {{ address = \"{}\" }}", b[0].addr, b[1].addr);
    let three = format!(
        "{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\" }}, {{ address = \"{}\" }}",
        b[0].addr, b[1].addr, b[2].addr
    );
    let proxy = Arc::new(Proxy::start(&body(&two)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (proxy, stop, ok, failed) = (proxy.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = client.get(proxy.url("/echo").parse().expect("url")).await;
                let outcome = match result {
                    Ok(resp) if resp.status() == 200 => {
                        let body = text(resp).await;
                        let marks = [body.contains("x-request-id"), body.contains("x-fault-filter")];
                        if marks.iter().filter(|m| **m).count() == 1 { Ok(()) } else { Err(format!("marks {marks:?}")) }
                    }
                    Ok(resp) => Err(format!("status {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        bad.push(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            bad
        }));
    }

    let mut latencies = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        let before = version(&proxy).await;
        let (rejected_before, _) = rejections(&proxy).await;
        let written = Instant::now();
        let expect_refusal = match i % 5 {
            0 => {
                // Each good configuration differs from the one in force, so that it applies.
                save_by_rename(&proxy.config_path, config_with(&proxy, &body(&three)).as_bytes());
                None
            }
            1 => {
                save_by_rename(&wasm, &versions[(i / 5 + 1) % 2]);
                None
            }
            2 => {
                write_in_place_slowly(&proxy.config_path, config_with(&proxy, &body(&two)).as_bytes()).await;
                None
            }
            3 => {
                write_in_place(&proxy.config_path, b"[[routes]\nname = \"r\"\n");
                Some(":1: ")
            }
            _ => {
                write_in_place(&proxy.config_path, b"");
                Some("no setting")
            }
        };
        match expect_refusal {
            None => {
                eventually(Duration::from_secs(10), "the change to apply", || async {
                    (version(&proxy).await > before).then_some(())
                })
                .await;
                latencies.push(written.elapsed());
            }
            Some(reason) => {
                refused += 1;
                let message = eventually(Duration::from_secs(10), "the change to be refused", || async {
                    let (total, message) = rejections(&proxy).await;
                    (total > rejected_before).then_some(message)
                })
                .await;
                assert!(message.contains(reason), "refusal {i} says why ({reason}): {message}");
                assert_eq!(version(&proxy).await, before, "a refused change applied nothing");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.expect("load task"));
    }
    latencies.sort();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "reload under load: {ok} ok, {failed} failed; latency write->serving median {:?} max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(failed, 0, "failed requests: {:?}", &errors[..errors.len().min(5)]);
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(refused, 40);
    assert_eq!(proxy.metric("wasmesh_reloads_total{outcome=\"rejected\"}").await, Some(f64::from(refused)));
    let (_, cfg): (u16, Value) = call_json("GET", &proxy.admin_url("/config"), None, None).await;
    assert_eq!(cfg["rejections_total"], refused, "{cfg}");
    assert_eq!(cfg["recent_rejections"].as_array().map(Vec::len), Some(16), "{cfg}");
    // The last change was a refused one; the good configuration before it still serves.
    assert!(cfg["last_error"]["message"].as_str().is_some_and(|m| m.contains("no setting")), "{cfg}");
}
