//! Service contracts: JSON Schemas for the bodies a service accepts and returns, per method
//! and path, compiled once when a configuration loads (the `jsonschema` crate, with remote
//! references off: a schema can never make the proxy fetch anything).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderMap, Method};
use serde::Serialize;

use crate::config::{ContractConfig, ContractMode, ServiceConfig};

/// A schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("service `{service}`: {}: {reason}", file.display())]
pub struct ContractError {
    /// The service whose contract names it.
    pub service: String,
    /// The schema file.
    pub file: PathBuf,
    /// Why it cannot be used.
    pub reason: String,
}

/// A compiled JSON Schema and the file it came from.
pub struct Schema {
    /// The file, as configured.
    pub file: PathBuf,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("file", &self.file).finish_non_exhaustive()
    }
}

/// One way a body breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON Pointer to the offending part of the body (`""` for the whole body).
    pub instance_path: String,
    /// The schema keyword that failed (`type`, `required`, `minimum`, …; `json` when the
    /// body is not JSON at all).
    pub keyword: String,
    /// What is wrong, in words.
    pub message: String,
}

/// At most this many violations are reported per body: enough to fix a request, bounded so
/// a huge invalid body cannot make a huge error.
const MAX_VIOLATIONS: usize = 32;

impl Schema {
    fn load(service: &str, file: &Path) -> Result<Self, ContractError> {
        let err = |reason: String| ContractError { service: service.to_owned(), file: file.to_path_buf(), reason };
        let text = std::fs::read(file).map_err(|e| err(format!("cannot read: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let validator = jsonschema::validator_for(&value).map_err(|e| err(format!("not a valid JSON Schema: {e}")))?;
        Ok(Self { file: file.to_path_buf(), validator })
    }

    /// Checks `body`; the violations found, none when it conforms.
    pub fn check(&self, body: &[u8]) -> Vec<Violation> {
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return vec![Violation {
                    instance_path: String::new(),
                    keyword: "json".to_owned(),
                    message: format!("body is not valid JSON: {e}"),
                }];
            }
        };
        self.validator
            .iter_errors(&value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                instance_path: e.instance_path().to_string(),
                keyword: e.kind().keyword().to_owned(),
                message: e.to_string(),
            })
            .collect()
    }
}

/// A path pattern: literal segments, `{name}` for any one segment, a final `*` for any rest.
#[derive(Debug, Clone)]
struct PathPattern {
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Any,
}

impl PathPattern {
    fn parse(pattern: &str) -> Self {
        let mut segments: Vec<Segment> = pattern
            .trim_start_matches('/')
            .split('/')
            .map(|s| if s.starts_with('{') && s.ends_with('}') { Segment::Any } else { Segment::Literal(s.to_owned()) })
            .collect();
        let rest = matches!(segments.last(), Some(Segment::Literal(s)) if s == "*");
        if rest {
            segments.pop();
        }
        Self { segments, rest }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.trim_start_matches('/').split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(p)) if !p.is_empty() => {}
                (Segment::Literal(l), Some(p)) if l == p => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// One compiled contract.
#[derive(Debug)]
pub struct Contract {
    /// As configured (listed by the admin API).
    pub config: ContractConfig,
    methods: Vec<Method>,
    path: PathPattern,
    /// Schema for request bodies.
    pub request: Option<Schema>,
    /// Schema for 2xx response bodies.
    pub response: Option<Schema>,
    /// Report or enforce on responses.
    pub response_mode: ContractMode,
    /// Largest body validated.
    pub max_body_bytes: usize,
    content_types: Vec<String>,
}

impl Contract {
    /// Whether a message with `headers` has a body this contract validates: its
    /// `Content-Type` is one of the contract's media types (parameters such as `charset`
    /// aside).
    pub fn validates(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = value.split(';').next().unwrap_or("").trim();
        self.content_types.iter().any(|t| t.eq_ignore_ascii_case(media))
    }
}

/// A service's contracts, in configuration order.
#[derive(Debug, Default)]
pub struct Contracts {
    list: Vec<Contract>,
}

impl Contracts {
    /// Compiles the contracts of `service`, or `None` when it has none. Fails on the first
    /// schema file that cannot be read or is not a valid JSON Schema.
    pub fn load(service: &ServiceConfig) -> Result<Option<Arc<Self>>, ContractError> {
        if service.contracts.is_empty() {
            return Ok(None);
        }
        let schema = |file: &Option<PathBuf>| file.as_deref().map(|f| Schema::load(&service.name, f)).transpose();
        let list = service
            .contracts
            .iter()
            .map(|c| {
                Ok(Contract {
                    methods: c.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect(),
                    path: PathPattern::parse(&c.path),
                    request: schema(&c.request_schema)?,
                    response: schema(&c.response_schema)?,
                    response_mode: c.response_mode,
                    max_body_bytes: c.max_body_bytes,
                    content_types: c.content_types.clone(),
                    config: c.clone(),
                })
            })
            .collect::<Result<_, ContractError>>()?;
        Ok(Some(Arc::new(Self { list })))
    }

    /// The first contract covering `method` on `path`.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Contract> {
        self.list.iter().find(|c| (c.methods.is_empty() || c.methods.contains(method)) && c.path.matches(path))
    }

    /// Every contract, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Contract> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_match_segments_parameters_and_rest() {
        let p = PathPattern::parse("/orders/{id}/items");
        assert!(p.matches("/orders/42/items"));
        assert!(!p.matches("/orders/42"));
        assert!(!p.matches("/orders//items"), "a parameter needs a segment");
        assert!(!p.matches("/orders/42/items/7"));
        let p = PathPattern::parse("/api/*");
        assert!(p.matches("/api/a/b/c"));
        assert!(p.matches("/api/"));
        assert!(!p.matches("/other"));
        let p = PathPattern::parse("/orders");
        assert!(p.matches("/orders") && !p.matches("/orders/1"));
    }

    #[test]
    fn violations_name_the_path_keyword_and_message() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("order.json");
        let schema = r#"{"type":"object","required":["sku","qty"],"properties":{"sku":{"type":"string"},"qty":{"type":"integer","minimum":1}}}"#;
        std::fs::write(&file, schema).expect("write");
        let schema = Schema::load("orders", &file).expect("valid schema");
        assert!(schema.check(br#"{"sku":"a","qty":2}"#).is_empty());
        let found = schema.check(br#"{"qty":0}"#);
        let keywords: Vec<(&str, &str)> =
            found.iter().map(|v| (v.instance_path.as_str(), v.keyword.as_str())).collect();
        assert!(keywords.contains(&("", "required")), "{found:?}");
        assert!(keywords.contains(&("/qty", "minimum")), "{found:?}");
        let not_json = schema.check(b"{oops");
        assert_eq!(not_json[0].keyword, "json");

        std::fs::write(&file, r#"{"type": 12}"#).expect("write");
        let err = Schema::load("orders", &file).expect_err("invalid schema");
        assert!(err.to_string().contains("order.json") && err.to_string().contains("not a valid JSON Schema"), "{err}");
    }
}
