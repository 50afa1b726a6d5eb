//! `[[routes]]`: how requests are matched to services and rewritten.

use std::time::Duration;

use serde::Deserialize;

/// A route: a match and the service it sends to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Listeners this route applies to; all listeners when empty.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What a request must look like.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// The service that handles matched requests.
    pub service: String,
    /// Path rewriting applied before forwarding.
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Overrides the service's total request timeout for this route.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// A router plugin that may send the request elsewhere or answer it.
    #[serde(default)]
    pub router: Option<String>,
    /// Filter plugins, run in this order on requests and in reverse on responses.
    #[serde(default)]
    pub filters: Vec<String>,
}

/// Conditions a request must meet for a route to match; all given conditions must hold.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host (without port); `*.example.com` matches any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path_exact: Option<String>,
    /// Allowed methods; any when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// One header condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (case-insensitive).
    pub name: String,
    /// Required exact value; when absent the header only has to be present.
    #[serde(default)]
    pub value: Option<String>,
}

/// Path rewriting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Replaces the matched `path_prefix` (use `"/"` to strip it).
    #[serde(default)]
    pub prefix: Option<String>,
}
