//! Route matching: the first route whose every condition holds wins.
//!
//! Matching reads only borrowed parts of the request (host, path, method, headers) and
//! allocates nothing.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{MatchConfig, RewriteConfig};

/// A compiled match condition.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    host: Option<HostMatch>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, Default)]
enum PathMatch {
    #[default]
    Any,
    Exact(String),
    Prefix(String),
}

/// The parts of a request a route can match on.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    /// Host without port, as sent (case is ignored when matching).
    pub host: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl Matcher {
    /// Compiles a validated match table.
    pub fn new(cfg: &MatchConfig) -> Self {
        let host = cfg.host.as_ref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            }
        });
        let path = match (&cfg.path_exact, &cfg.path_prefix) {
            (Some(p), _) => PathMatch::Exact(p.clone()),
            (None, Some(p)) if p != "/" => PathMatch::Prefix(p.trim_end_matches('/').to_owned()),
            _ => PathMatch::Any,
        };
        let methods = cfg.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect();
        let headers = cfg
            .headers
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                let value = h.value.as_ref().and_then(|v| HeaderValue::from_str(v).ok());
                Some((name, value))
            })
            .collect();
        Self { host, path, methods, headers }
    }

    /// Whether the request satisfies every condition.
    pub fn matches(&self, req: &MatchInput<'_>) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => req.host.eq_ignore_ascii_case(h),
            Some(HostMatch::Suffix(s)) => {
                req.host.len() > s.len() && req.host[req.host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        };
        host_ok
            && match &self.path {
                PathMatch::Any => true,
                PathMatch::Exact(p) => req.path == p,
                PathMatch::Prefix(p) => {
                    req.path.starts_with(p.as_str()) && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/'))
                }
            }
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|(name, want)| match (req.headers.get(name), want) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(got), Some(want)) => got == want,
            })
    }

    /// The matched path prefix, when this route matches by prefix.
    fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
            PathMatch::Any => Some(""),
            PathMatch::Exact(_) => None,
        }
    }
}

/// A compiled path rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Replacement for the matched prefix.
    prefix: String,
}

impl Rewrite {
    /// Compiles a validated rewrite table; `None` when it changes nothing.
    pub fn new(cfg: &RewriteConfig) -> Option<Self> {
        cfg.prefix.as_ref().map(|p| Self { prefix: p.clone() })
    }

    /// Rewrites `path_and_query` (which matched `matcher`), keeping the query.
    pub fn apply(&self, matcher: &Matcher, path_and_query: &str) -> String {
        let matched = matcher.prefix().unwrap_or("");
        let rest = &path_and_query[matched.len().min(path_and_query.len())..];
        match (self.prefix.ends_with('/'), rest.starts_with('/')) {
            (true, true) => format!("{}{}", self.prefix, &rest[1..]),
            (false, false) if !rest.is_empty() && !rest.starts_with('?') => format!("{}/{}", self.prefix, rest),
            _ => format!("{}{}", self.prefix, rest),
        }
    }
}

/// Strips the port from a `Host` header or URI authority (`[::1]:80` → `[::1]`).
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderMatchConfig;

    fn view<'a>(host: &'a str, path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> MatchInput<'a> {
        MatchInput { host, path, method, headers }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let m = Matcher::new(&MatchConfig { path_prefix: Some("/api".into()), ..Default::default() });
        let h = HeaderMap::new();
        assert!(m.matches(&view("x", "/api", &Method::GET, &h)));
        assert!(m.matches(&view("x", "/api/users", &Method::GET, &h)));
        assert!(!m.matches(&view("x", "/apix", &Method::GET, &h)));
        assert!(!m.matches(&view("x", "/", &Method::GET, &h)));
    }

    #[test]
    fn host_method_and_headers() {
        let m = Matcher::new(&MatchConfig {
            host: Some("*.example.com".into()),
            methods: vec!["POST".into()],
            headers: vec![
                HeaderMatchConfig { name: "x-canary".into(), value: Some("1".into()) },
                HeaderMatchConfig { name: "x-present".into(), value: None },
            ],
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("1"));
        h.insert("x-present", HeaderValue::from_static("anything"));
        assert!(m.matches(&view("API.Example.com", "/", &Method::POST, &h)));
        assert!(!m.matches(&view("example.com", "/", &Method::POST, &h)));
        assert!(!m.matches(&view("a.example.com", "/", &Method::GET, &h)));
        h.insert("x-canary", HeaderValue::from_static("2"));
        assert!(!m.matches(&view("a.example.com", "/", &Method::POST, &h)));
    }

    #[test]
    fn rewrite_replaces_the_prefix_and_keeps_the_query() {
        let m = Matcher::new(&MatchConfig { path_prefix: Some("/api".into()), ..Default::default() });
        let strip = Rewrite::new(&RewriteConfig { prefix: Some("/".into()) }).expect("rewrite");
        assert_eq!(strip.apply(&m, "/api/users?id=1"), "/users?id=1");
        assert_eq!(strip.apply(&m, "/api"), "/");
        assert_eq!(strip.apply(&m, "/api?x=1"), "/?x=1");
        let v2 = Rewrite::new(&RewriteConfig { prefix: Some("/v2".into()) }).expect("rewrite");
        assert_eq!(v2.apply(&m, "/api/users"), "/v2/users");
        assert_eq!(v2.apply(&m, "/api"), "/v2");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
