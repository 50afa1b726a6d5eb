//! The `/metrics` exposition as a real Prometheus (Debian's `prometheus`) reads it: a scrape of
//! a running wasmesh, then a request counter and a latency histogram queried back through
//! Prometheus's HTTP API.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Proxy, backends, eventually, free_port, get, json, one_route};

/// A Prometheus server scraping one target every second, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wasmesh\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (Debian package prometheus)");
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The value of the instant query `promql` when it has exactly one sample.
    async fn query(&self, promql: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let resp = get(&url).await.ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body = json(resp).await;
        let result = body["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_request_counter_and_latency_histogram() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    let prometheus = Prometheus::start(proxy.admin);
    for _ in 0..25 {
        assert_eq!(get(&proxy.url("/echo")).await.expect("request").status(), 200);
    }
    let wait = Duration::from_secs(30);
    eventually(wait, "Prometheus scraping wasmesh", || async {
        (prometheus.query("up{job=\"wasmesh\"}").await == Some(1.0)).then_some(())
    })
    .await;
    let requests = "sum(wasmesh_requests_total{route=\"r\",service=\"s\",status_class=\"2xx\"})";
    eventually(wait, "25 requests counted", || async {
        (prometheus.query(requests).await == Some(25.0)).then_some(())
    })
    .await;
    // The histogram: its count matches, and a quantile over its buckets is a latency in seconds.
    let count = "sum(wasmesh_request_duration_seconds_count{route=\"r\"})";
    eventually(wait, "25 latencies observed", || async { (prometheus.query(count).await == Some(25.0)).then_some(()) })
        .await;
    let p50 = prometheus
        .query("histogram_quantile(0.5, sum by (le) (wasmesh_request_duration_seconds_bucket{route=\"r\"}))")
        .await
        .expect("a median from the buckets");
    assert!(p50 > 0.0 && p50 < 1.0, "median latency {p50} s");
}
