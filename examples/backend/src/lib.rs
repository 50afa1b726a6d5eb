//! A small, real HTTP backend for the quickstart and the end-to-end tests.
//!
//! It speaks HTTP/1.1 and h2c and answers by path:
//! - `/echo`: a JSON description of the request it received (method, path, version, headers);
//! - `/status/{code}`: that status;
//! - `/delay/{ms}`: waits, then answers like `/`;
//! - `/stall`: sends its response head, then never finishes the body;
//! - `/stream/{bytes}`: streams that many bytes in 64 KiB chunks, with a `content-length`;
//! - `/chunked/{bytes}`: the same, chunk-encoded (no length announced);
//! - `/upload`: reads the request body as it streams in and answers with its length;
//! - `/ws`: a WebSocket echo;
//! - `/respond-headers?name=value&…`: answers with those response headers;
//! - anything else: `backend {name}` and an `x-backend` header.
//!
//! - `/health`: 200, or the status set with [`Backend::set_health_status`]; the body is
//!   plain text, or the JSON set with [`Backend::set_health_body`].
//!
//! [`Backend::set_status`] makes every answer a fixed status instead, to simulate a failing
//! service. Every request is counted, so tests can check what reached the backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running backend.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, echoed in answers.
    pub name: String,
    /// Requests received.
    pub hits: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<AtomicU64>,
    health_status: Arc<AtomicU64>,
    health_body: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

impl Backend {
    /// Starts a backend named `name` on `addr` (port 0 picks a free port).
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let status = Arc::new(AtomicU64::new(0));
        let health_status = Arc::new(AtomicU64::new(200));
        let health_body = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let state = Arc::new(State {
            name: name.to_owned(),
            hits: hits.clone(),
            delay_ms: delay_ms.clone(),
            status: status.clone(),
            health_status: health_status.clone(),
            health_body: health_body.clone(),
        });
        tokio::spawn(accept_loop(listener, state, stop.clone()));
        Ok(Self { addr, name: name.to_owned(), hits, delay_ms, status, health_status, health_body, stop })
    }

    /// Answers every later request with `status` (`None` restores normal answers).
    pub fn set_status(&self, status: Option<u16>) {
        self.status.store(status.map_or(0, u64::from), Ordering::Relaxed);
    }

    /// Answers later `/health` requests with `status`.
    pub fn set_health_status(&self, status: u16) {
        self.health_status.store(u64::from(status), Ordering::Relaxed);
    }

    /// Answers later `/health` requests with this JSON body (`None`: plain text).
    pub fn set_health_body(&self, json: Option<&str>) {
        *self.health_body.lock().unwrap_or_else(|e| e.into_inner()) = json.map(str::to_owned);
    }

    /// Delays every later answer by `delay`, to make this backend slow.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection, as if the process died.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    name: String,
    hits: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<AtomicU64>,
    health_status: Arc<AtomicU64>,
    health_body: Arc<Mutex<Option<String>>>,
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

async fn handle(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    state.hits.fetch_add(1, Ordering::Relaxed);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let forced = state.status.load(Ordering::Relaxed);
    if forced != 0 {
        let code = StatusCode::from_u16(forced as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(code, format!("forced {code} from {}\n", state.name));
    }
    let path = req.uri().path().to_owned();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    let mut resp = match head {
        "echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (k.to_string(), serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                })
                .collect();
            let body = serde_json::json!({
                "backend": state.name,
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        "status" => {
            let code = arg.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut r = Response::new(full(format!("status {code} from {}\n", state.name)));
            *r.status_mut() = code;
            r
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            Response::new(full(format!("backend {}\n", state.name)))
        }
        "stall" => {
            let stream = futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(b"partial"))) })
                .chain(futures_util::stream::pending());
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "stream" | "chunked" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let n = left.min(chunk.len() as u64);
                        (Ok(Frame::data(chunk.slice(..n as usize))), left - n)
                    })
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            if head == "stream" {
                r.headers_mut().insert("content-length", HeaderValue::from(total));
            }
            r
        }
        "upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                }
            }
            Response::new(full(total.to_string()))
        }
        "ws" => websocket(&mut req),
        "health" => {
            let code =
                StatusCode::from_u16(state.health_status.load(Ordering::Relaxed) as u16).unwrap_or(StatusCode::OK);
            let json = state.health_body.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match json {
                Some(body) => {
                    let mut r = Response::new(full(body));
                    *r.status_mut() = code;
                    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                    r
                }
                None => error(code, format!("health {code}\n")),
            }
        }
        "respond-headers" => {
            let mut r = Response::new(full(format!("backend {}\n", state.name)));
            for pair in req.uri().query().unwrap_or("").split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
                {
                    r.headers_mut().append(k, v);
                }
            }
            r
        }
        _ => Response::new(full(format!("backend {}\n", state.name))),
    };
    if let Ok(v) = HeaderValue::from_str(&state.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

fn error(status: StatusCode, e: impl std::fmt::Display) -> Response<Body> {
    let mut r = Response::new(full(e.to_string()));
    *r.status_mut() = status;
    r
}

/// Accepts a WebSocket handshake and echoes every message back.
fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return error(StatusCode::BAD_REQUEST, "not a websocket handshake");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}
