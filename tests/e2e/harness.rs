//! Test harness: the real `wasmesh` binary as a child process, real backends on loopback,
//! and a small HTTP client.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmesh_demo_backend::Backend;

/// The `wasmesh` binary cargo built beside this test executable.
pub fn wasmesh_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    let bin = dir.join("wasmesh");
    assert!(bin.exists(), "{} not built: run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A listener that never accepts, with its backlog filled: the kernel drops further SYNs, so
/// a connect to it hangs, as to a host too busy to answer. Closed on drop.
pub struct Backlogged {
    /// Its address.
    pub addr: SocketAddr,
    _socket: socket2::Socket,
    _fillers: Vec<tokio::net::TcpStream>,
}

impl Backlogged {
    /// Binds it on an ephemeral loopback port and fills its backlog.
    pub async fn start() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                fillers.push(s);
            }
        }
        Self { addr, _socket: socket, _fillers: fillers }
    }
}

/// Starts `n` demo backends named b0, b1, … on ephemeral loopback ports.
pub async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Backend::start(&format!("b{i}"), "127.0.0.1:0".parse().expect("addr")).await.expect("backend"));
    }
    out
}

/// An example plugin built by `plugins/build.sh`.
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/target/wasm32-wasip2/release").join(name);
    assert!(path.exists(), "{} missing: run plugins/build.sh", path.display());
    path
}

/// A `[[plugins]]` entry for the example plugin `file`, with `extra` TOML lines.
pub fn plugin_toml(name: &str, kind: &str, file: &str, config: &str, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\nconfig = {config}\n{extra}\n",
        plugin_wasm(file).display()
    )
}

/// TOML endpoint list for `backends`.
pub fn endpoints(backends: &[Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    format!("[{}]", list.join(", "))
}

/// A route `r` sending everything to service `s` with the one endpoint `addr`.
pub fn one_route(addr: SocketAddr) -> String {
    format!(
        "[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{addr}\" }}]\n"
    )
}

/// A running `wasmesh run` process, killed on drop.
pub struct Proxy {
    child: Child,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The first proxy listener.
    pub listen: SocketAddr,
    _dir: tempfile::TempDir,
    /// The configuration file.
    #[allow(dead_code)]
    pub config_path: PathBuf,
    log_path: PathBuf,
    token: Option<String>,
    /// The generated start of the configuration (admin, log, the `main` listener).
    #[allow(dead_code)]
    pub header: String,
}

impl Proxy {
    /// Starts wasmesh with `body` appended to a generated header that sets the admin port and
    /// one listener named `main`. Waits until the admin API answers.
    pub async fn start(body: &str) -> Self {
        Self::start_with(body, "").await
    }

    /// Like [`Proxy::start`], with extra keys for the `[[listeners]]` table.
    pub async fn start_with(body: &str, listener_extra: &str) -> Self {
        Self::start_full(body, listener_extra, None).await
    }

    /// Like [`Proxy::start_with`], with an admin token that every admin request then carries.
    pub async fn start_full(body: &str, listener_extra: &str, token: Option<&str>) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let token_line = token.map(|t| format!("token = \"{t}\"\n")).unwrap_or_default();
        let header = format!(
            "[admin]\nlisten = \"{admin}\"\n{token_line}[log]\nlevel = \"info\"\n\n[[listeners]]\nname = \"main\"\nlisten = \"{listen}\"\n{listener_extra}\n\n"
        );
        let config = format!("{header}{body}\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("wasmesh.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("wasmesh.log");
        let child = spawn(&config_path, &log_path);
        let token = token.map(str::to_owned);
        let mut proxy = Self { child, admin, listen, _dir: dir, config_path, log_path, token, header };
        proxy.wait_ready().await;
        proxy
    }

    /// Kills the process with SIGKILL (no drain, no flush) and starts it again on the same
    /// configuration and working directory.
    pub async fn kill9_and_restart(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
        self.child = spawn(&self.config_path, &self.log_path);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wasmesh exited with {status}:\n{}", self.log());
            }
            let mut req = Request::get(self.admin_url("/ready"));
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let ready = client().request(req.body(Full::default()).expect("request")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("wasmesh did not become ready:\n{}", self.log());
    }

    /// URL of `path` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The process's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(ok.success());
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Resident memory of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// The value of metric sample `name{labels}` from /metrics (labels as written there).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = text(get(&self.admin_url("/metrics")).await.expect("metrics")).await;
        text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wasmesh run` on `config` in the config's folder (where relative data paths such as
/// the embedded registry land), appending its stderr to `log`.
fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(wasmesh_bin())
        .args(["run", "--config"])
        .arg(config)
        .current_dir(config.parent().expect("config folder"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn wasmesh")
}

/// Sends `method url` with a JSON body (or none) and an optional bearer token; returns the
/// status and the body parsed as JSON (`null` when it is not JSON).
pub async fn call_json(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let resp = send(req.body(Full::new(body)).expect("request")).await;
    let status = resp.status().as_u16();
    let text = text(resp).await;
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// GET `url` on a fresh client.
pub async fn get(url: &str) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    client().get(url.parse().expect("url")).await
}

/// Sends `req` with a fresh HTTP/1.1 client.
pub async fn send(req: Request<Full<Bytes>>) -> Response<hyper::body::Incoming> {
    client().request(req).await.expect("request")
}

/// The whole body as text.
pub async fn text(resp: Response<hyper::body::Incoming>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The whole body as JSON.
pub async fn json(resp: Response<hyper::body::Incoming>) -> serde_json::Value {
    serde_json::from_str(&text(resp).await).expect("JSON body")
}

/// A real etcd server (Debian's `etcd-server`) on free loopback ports with a temporary data
/// folder, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    /// Client URL.
    pub url: String,
    peer_port: u16,
    client_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let mut etcd =
            Self { child: None, url: format!("http://127.0.0.1:{client_port}"), peer_port, client_port, dir };
        etcd.spawn().await;
        etcd
    }

    async fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url, "--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (Debian package etcd-server)");
        self.child = Some(child);
        let health = format!("{}/health", self.url);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = get(&health).await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not start on port {}", self.client_port);
    }

    /// Kills etcd (SIGKILL), as an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads until the peer closes (or resets) the connection; how long that took, or `None` if it
/// was still open at `limit`.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}
