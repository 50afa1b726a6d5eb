//! The mesh API, under `/api/v1/mesh/v2/`: register, deregister, discover, call, health and
//! topology, in the JSON shapes our users script against. `openapi.json` describes it.

mod call;
mod registration;
mod views;

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::{Admin, JsonResponse, error, json};
use crate::body::Body;
#[cfg(any(test, feature = "fuzzing"))]
use call::{CallRequest, build_call};
#[cfg(any(test, feature = "fuzzing"))]
use registration::check_registration;
use registration::deregister_id;

/// Path prefix of the mesh API.
pub const PREFIX: &str = "/api/v1/mesh/v2/";

/// A request the API refuses: the status and the reason, answered as a JSON error.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn response(self) -> JsonResponse {
        error(self.0, self.1)
    }
}

impl Admin {
    /// Answers a request whose path starts with [`PREFIX`].
    pub(super) async fn mesh_api(&self, req: Request<Body>, peer: SocketAddr) -> JsonResponse {
        let path = req.uri().path()[PREFIX.len()..].to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::POST, "register") => match read_json(req).await {
                Ok(body) => self.register(body).await,
                Err(e) => e.response(),
            },
            (&Method::POST, "deregister") => match read_json(req).await.and_then(deregister_id) {
                Ok(id) => self.deregister(&id).await,
                Err(e) => e.response(),
            },
            (&Method::DELETE, p) if p.starts_with("register/") => self.deregister(&p["register/".len()..]).await,
            (&Method::GET, p) if p.starts_with("discover/") => self.discover(&p["discover/".len()..]),
            (&Method::GET, "services") => json(StatusCode::OK, &self.services()),
            (&Method::POST, "call") => match read_json(req).await {
                Ok(body) => self.call(body, peer).await,
                Err(e) => e.response(),
            },
            (&Method::GET, "health") => json(StatusCode::OK, &self.health()),
            (&Method::GET, "topology") => json(StatusCode::OK, &self.topology()),
            (&Method::GET, "openapi.json") => json(StatusCode::OK, &super::openapi::document()),
            (_, "register" | "deregister" | "services" | "call" | "health" | "topology" | "openapi.json") => {
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {PREFIX}{path}"))
            }
            (_, p) if p.starts_with("register/") || p.starts_with("discover/") => {
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {PREFIX}{path}"))
            }
            _ => error(StatusCode::NOT_FOUND, format!("no mesh API endpoint at {PREFIX}{path}")),
        }
    }
}

/// Reads a JSON body of at most [`super::MAX_BODY`] bytes into `T`, or the 400 to answer.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Body>) -> Result<T, Refusal> {
    let bytes = match http_body_util::Limited::new(req.into_body(), super::MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return Err(Refusal(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    };
    parse_json(&bytes)
}

/// A JSON body into `T`, or the 400 to answer.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// An endpoint of the mesh API that takes a JSON body.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodyEndpoint {
    /// `POST register`.
    Register,
    /// `POST deregister`.
    Deregister,
    /// `POST call`.
    Call,
}

/// Runs `body` through what `endpoint` does with it before anything is stored, resolved or
/// sent: the JSON shape, then the checks; `Err` holds the message a client would be answered.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_body(endpoint: BodyEndpoint, body: &[u8]) -> Result<(), String> {
    let refused = |r: Refusal| r.1;
    match endpoint {
        BodyEndpoint::Register => check_registration(&parse_json(body).map_err(refused)?).map(|_| ()),
        BodyEndpoint::Deregister => parse_json(body).and_then(deregister_id).map(|_| ()).map_err(refused),
        BodyEndpoint::Call => {
            let req: CallRequest = parse_json(body).map_err(refused)?;
            let out = build_call(&req)?;
            // What the routing and the upstream framing rely on.
            assert!(out.headers().contains_key(http::header::HOST), "a call always names its host");
            if let Some(body) = &req.body {
                assert_eq!(out.headers()[http::header::CONTENT_LENGTH], body.len().to_string().as_str());
            }
            Ok(())
        }
    }
}
