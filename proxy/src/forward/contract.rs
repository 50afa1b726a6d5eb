//! Contract checks on the request path: a request body is read (up to the contract's limit)
//! and checked before it leaves for the upstream; a 2xx response body before it goes back.
//! Messages a contract does not cover, or whose media type it does not name, stream on
//! untouched and unbuffered.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::Upstream;
use super::buffer::{Read, read_limited};
use super::response::{Answer, ERROR_HEADER, ResponseBody, error_name, local, local_body};
use crate::body::Body;
use crate::config::ContractMode;
use crate::contract::{Contract, Schema, Violation};
use crate::mesh::Mesh;
use crate::message::ProxyResponse;
use crate::snapshot::{Route, Service};
use crate::telemetry::metrics::{ContractLabels, ErrorKind};

/// The JSON answer listing `violations`.
fn violation_response(status: StatusCode, error: &str, schema: &Schema, violations: &[Violation]) -> Response<Body> {
    let body = serde_json::json!({
        "error": error,
        "schema": schema.file,
        "violations": violations,
    });
    let mut resp = Response::new(Body::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static(error_name(ErrorKind::contract_violation)));
    resp
}

fn count(mesh: &Mesh, service: &Service, direction: &'static str, action: &'static str) {
    let labels = ContractLabels { service: service.name.clone(), direction, action };
    mesh.metrics.contract_violations.get_or_create(&labels).inc();
}

/// Checks a request body against `contract`: the body to send on, or the answer that stops
/// the request (400 with the violations, 413 over the size limit) with the proxy's error.
pub(super) async fn check_request(
    mesh: &Mesh,
    service: &Service,
    contract: &Contract,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<Body, (ErrorKind, Answer)> {
    let Some(schema) = contract.request.as_ref().filter(|_| contract.validates(headers)) else { return Ok(body) };
    let reject = |kind: ErrorKind, resp: Response<Body>| {
        count(mesh, service, "request", "rejected");
        Err((kind, ProxyResponse::boxed(resp.map(ResponseBody::plain))))
    };
    match read_limited(body, contract.max_body_bytes, deadline).await {
        Err(kind) => Err((kind, local(kind))),
        Ok(Read::TooLarge { .. }) => reject(ErrorKind::body_too_large, local_body(ErrorKind::body_too_large)),
        Ok(Read::Whole(bytes)) => {
            let violations = schema.check(&bytes);
            if violations.is_empty() {
                return Ok(Body::full(bytes));
            }
            let resp = violation_response(
                StatusCode::BAD_REQUEST,
                "request body breaks the service's contract",
                schema,
                &violations,
            );
            reject(ErrorKind::contract_violation, resp)
        }
    }
}

/// Checks the body of `up`'s response, a 2xx, against `contract`. When the contract is enforced
/// and the body breaks it (or is too large to check), a 502 listing the violations takes the
/// response's place, with the proxy's error. Reported breaks pass with a warning and a metric.
pub(super) async fn check_response(
    mesh: &Mesh,
    route: &Route,
    service: &Service,
    contract: &Contract,
    up: &mut Upstream<'_>,
    deadline: Instant,
) {
    let response = &mut up.exchange.response;
    let checked =
        contract.response.as_ref().filter(|_| response.status().is_success() && contract.validates(response.headers()));
    let Some(schema) = checked else { return };
    let body = std::mem::take(response.body_mut());
    let (violations, passed_on) = match read_limited(body, contract.max_body_bytes, deadline).await {
        Err(kind) => return up.replace(kind, local_body(kind)),
        Ok(Read::Whole(bytes)) => (schema.check(&bytes), Body::full(bytes)),
        Ok(Read::TooLarge { prefix, rest }) => {
            let too_large = Violation {
                instance_path: String::new(),
                keyword: "maxBodyBytes".to_owned(),
                message: format!("body exceeds {} bytes: not checked", contract.max_body_bytes),
            };
            (vec![too_large], Body::Prefixed(Some(prefix), Box::new(rest)))
        }
    };
    if violations.is_empty() {
        *up.exchange.response.body_mut() = passed_on;
        return;
    }
    match contract.response_mode {
        ContractMode::Report => {
            count(mesh, service, "response", "reported");
            let first = &violations[0];
            tracing::warn!(
                service = %service.name,
                route = %route.name,
                schema = %schema.file.display(),
                violations = violations.len(),
                first = %format!("{} ({}): {}", first.instance_path, first.keyword, first.message),
                "response breaks the service's contract; passed on (report mode)"
            );
            *up.exchange.response.body_mut() = passed_on;
        }
        ContractMode::Enforce => {
            count(mesh, service, "response", "rejected");
            let resp = violation_response(
                StatusCode::BAD_GATEWAY,
                "upstream response breaks the service's contract",
                schema,
                &violations,
            );
            up.replace(ErrorKind::contract_violation, resp);
        }
    }
}
