//! `call`: a request sent into the mesh on a client's behalf, routed like any other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{Admin, JsonResponse, error, json};
use crate::body::Body;
use crate::forward::{Downstream, call};
use crate::snapshot::CALL_LISTENER;

/// Largest response body `call` returns.
const MAX_CALL_RESPONSE: usize = 10 * 1024 * 1024;

/// `POST call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallRequest {
    service_name: String,
    #[serde(default = "CallRequest::default_method")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) body: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl CallRequest {
    fn default_method() -> String {
        "GET".to_owned()
    }
}

impl Admin {
    /// `POST call`.
    pub(super) async fn call(&self, req: CallRequest, peer: SocketAddr) -> JsonResponse {
        let started = Instant::now();
        let request = match build_call(&req) {
            Ok(r) => r,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let down = Downstream::new(CALL_LISTENER, peer, "http");
        let exchange = async {
            let resp = call(&self.mesh, &down, &req.service_name, request).await?;
            let (parts, body) = resp.into_parts();
            let bytes = http_body_util::Limited::new(body, MAX_CALL_RESPONSE).collect().await.map(|c| c.to_bytes());
            Some((parts, bytes))
        };
        let outcome = match req.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), exchange).await,
            None => Ok(exchange.await),
        };
        let (parts, bytes) = match outcome {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {} ms", req.timeout_ms.unwrap_or(0)),
                );
            }
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("service `{}` is not registered or configured", req.service_name),
                );
            }
            Ok(Some(pair)) => pair,
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_GATEWAY, format!("reading the response body failed: {e}")),
        };
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| *v = format!("{v}, {value}"))
                .or_insert_with(|| value.into_owned());
        }
        let mut answer = json!({
            "service_name": req.service_name,
            "status": parts.status.as_u16(),
            "headers": headers,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        match std::str::from_utf8(&bytes) {
            Ok(text) => answer["body"] = Value::String(text.to_owned()),
            Err(_) => answer["body_base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
        }
        json(StatusCode::OK, &answer)
    }
}

/// The request `call` sends through the mesh.
pub(super) fn build_call(req: &CallRequest) -> Result<Request<Body>, String> {
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method `{}` is not an HTTP method", req.method))?;
    if !req.path.starts_with('/') {
        return Err(format!("path `{}` must start with `/`", req.path));
    }
    let uri = http::Uri::try_from(req.path.as_str()).map_err(|e| format!("path `{}`: {e}", req.path))?;
    let mut out = Request::new(Body::full(Bytes::from(req.body.clone().unwrap_or_default())));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("header `{name}` has an invalid value"))?;
        out.headers_mut().append(name, value);
    }
    if !out.headers().contains_key(http::header::HOST) {
        let host =
            HeaderValue::from_str(&req.service_name).map_err(|_| "service_name is not a valid host".to_owned())?;
        out.headers_mut().insert(http::header::HOST, host);
    }
    if let Some(body) = &req.body {
        out.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(out)
}
