//! Contract checks on the request path: a request body is read (up to the contract's limit)
//! and checked before it leaves for the upstream; a 2xx response body before it goes back.
//! Messages a contract does not cover, or whose media type it does not name, stream on
//! untouched and unbuffered.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

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
/// the request (400 with the violations, 413 over the size limit).
pub(super) async fn check_request(
    mesh: &Mesh,
    route: &Route,
    service: &Service,
    contract: &Contract,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<Body, Answer> {
    let Some(schema) = contract.request.as_ref().filter(|_| contract.validates(headers)) else { return Ok(body) };
    let reject = |kind: ErrorKind, resp: Response<Body>| {
        route.metrics.count_error(kind);
        count(mesh, service, "request", "rejected");
        Err(ProxyResponse::boxed(resp.map(ResponseBody::plain)))
    };
    match read_limited(body, contract.max_body_bytes, deadline).await {
        Err(kind) => {
            route.metrics.count_error(kind);
            Err(local(kind))
        }
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

/// Checks a 2xx response body against `contract`: the body to send back, or, when the
/// contract is enforced and the body breaks it (or is too large to check), a 502 listing the
/// violations, which then goes back in the upstream response's place. Reported breaks pass
/// with a warning and a metric.
pub(super) async fn check_response(
    mesh: &Mesh,
    route: &Route,
    service: &Service,
    contract: &Contract,
    parts: &http::response::Parts,
    body: Body,
    deadline: Instant,
) -> Result<Body, Box<Response<Body>>> {
    let checked =
        contract.response.as_ref().filter(|_| parts.status.is_success() && contract.validates(&parts.headers));
    let Some(schema) = checked else { return Ok(body) };
    let (violations, passed_on) = match read_limited(body, contract.max_body_bytes, deadline).await {
        Err(kind) => {
            route.metrics.count_error(kind);
            return Err(Box::new(local_body(kind)));
        }
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
        return Ok(passed_on);
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
            Ok(passed_on)
        }
        ContractMode::Enforce => {
            count(mesh, service, "response", "rejected");
            route.metrics.count_error(ErrorKind::contract_violation);
            Err(Box::new(violation_response(
                StatusCode::BAD_GATEWAY,
                "upstream response breaks the service's contract",
                schema,
                &violations,
            )))
        }
    }
}
