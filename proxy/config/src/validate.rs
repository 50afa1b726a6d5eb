//! Semantic checks that serde cannot express: references between sections, ranges, exclusivity.

use std::collections::{HashMap, HashSet};

use super::error::Segment::{self, Index, Key};
use super::error::Violation;
use super::schema::*;

fn violation(path: Vec<Segment>, message: impl Into<String>) -> Violation {
    Violation { path, message: message.into() }
}

/// Returns the first violation found, walking the file top to bottom.
pub(crate) fn validate(config: &Config) -> Result<(), Violation> {
    validate_admin(&config.admin)?;
    if config.runtime.workers > 1024 {
        return Err(violation(vec![Key("runtime"), Key("workers")], "must be at most 1024"));
    }
    validate_tracing(&config.tracing)?;
    let listeners = validate_listeners(&config.listeners)?;
    let plugins = validate_plugins(&config.plugins)?;
    let services = validate_services(&config.services, &plugins)?;
    validate_routes(&config.routes, &listeners, &services, &plugins)
}

fn validate_tracing(t: &TracingConfig) -> Result<(), Violation> {
    let at = |field| vec![Key("tracing"), Key(field)];
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        return Err(violation(at("sample_ratio"), "must be between 0 and 1"));
    }
    if let Some(endpoint) = &t.otlp_endpoint {
        let uri: http::Uri = endpoint.parse().map_err(|e| violation(at("otlp_endpoint"), format!("{e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(violation(at("otlp_endpoint"), "must be an http:// URL with a host"));
        }
    }
    if t.export_timeout.is_zero() || t.batch_delay.is_zero() {
        let field = if t.export_timeout.is_zero() { "export_timeout" } else { "batch_delay" };
        return Err(violation(at(field), "must be greater than zero"));
    }
    if t.batch_size == 0 || t.batch_size > t.max_queue {
        return Err(violation(at("batch_size"), "must be between 1 and max_queue"));
    }
    Ok(())
}

fn validate_plugins(plugins: &[PluginConfig]) -> Result<HashMap<&str, PluginKind>, Violation> {
    let mut names = HashSet::new();
    for (i, p) in plugins.iter().enumerate() {
        let at = |field| vec![Key("plugins"), Index(i), Key(field)];
        unique(&mut names, &p.name, || at("name"), "plugin")?;
        if p.timeout.is_zero() {
            return Err(violation(at("timeout"), "must be greater than zero"));
        }
        if p.memory_limit_mib == 0 {
            return Err(violation(at("memory_limit_mib"), "must be greater than zero"));
        }
        if http::StatusCode::from_u16(p.fail_status).is_err() {
            return Err(violation(at("fail_status"), format!("{} is not an HTTP status", p.fail_status)));
        }
        if !p.config.is_table() {
            return Err(violation(at("config"), "must be a table"));
        }
    }
    Ok(plugins.iter().map(|p| (p.name.as_str(), p.kind)).collect())
}

fn validate_admin(admin: &AdminConfig) -> Result<(), Violation> {
    if let Some(token) = &admin.token
        && token.trim().is_empty()
    {
        return Err(violation(vec![Key("admin"), Key("token")], "must not be empty"));
    }
    if !admin.listen.ip().is_loopback() && admin.token.is_none() {
        return Err(violation(
            vec![Key("admin"), Key("listen")],
            format!("{} is not a loopback address: set admin.token to expose the admin API", admin.listen),
        ));
    }
    Ok(())
}

fn unique<'a>(
    seen: &mut HashSet<&'a str>,
    name: &'a str,
    path: impl FnOnce() -> Vec<Segment>,
    what: &str,
) -> Result<(), Violation> {
    if name.is_empty() {
        return Err(violation(path(), format!("{what} name must not be empty")));
    }
    if !seen.insert(name) {
        return Err(violation(path(), format!("duplicate {what} name `{name}`")));
    }
    Ok(())
}

fn validate_listeners(listeners: &[ListenerConfig]) -> Result<HashSet<&str>, Violation> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = |field| vec![Key("listeners"), Index(i), Key(field)];
        unique(&mut names, &l.name, || at("name"), "listener")?;
        if l.name.starts_with('@') {
            // `@`-names are the proxy's own route tables (`@call` for the mesh API).
            return Err(violation(at("name"), format!("listener name `{}` must not start with `@`", l.name)));
        }
        if !addrs.insert(l.listen) {
            return Err(violation(at("listen"), format!("address {} is used by another listener", l.listen)));
        }
        if l.header_read_timeout.is_zero() {
            return Err(violation(at("header_read_timeout"), "must be greater than zero"));
        }
        if l.idle_timeout.is_zero() {
            return Err(violation(at("idle_timeout"), "must be greater than zero"));
        }
        if l.max_connections == 0 {
            return Err(violation(at("max_connections"), "must be greater than zero"));
        }
        // Below 8 KiB, ordinary browser requests (cookies, user agents) would be refused; and
        // hyper, which serves the requests the fast path leaves it, reads in 8 KiB steps.
        if !(8..=1024).contains(&l.max_request_headers_kib) {
            return Err(violation(at("max_request_headers_kib"), "must be between 8 and 1024 (KiB)"));
        }
        if !(1..=1000).contains(&l.max_request_headers) {
            return Err(violation(at("max_request_headers"), "must be between 1 and 1000"));
        }
        if let Some(tls) = &l.tls {
            let at_tls = |field| vec![Key("listeners"), Index(i), Key("tls"), Key(field)];
            if tls.certificates.is_empty() {
                return Err(violation(at_tls("certificates"), "needs at least one certificate"));
            }
            if let Some(bad) = tls.alpn.iter().find(|p| !matches!(p.as_str(), "h2" | "http/1.1")) {
                return Err(violation(
                    at_tls("alpn"),
                    format!("`{bad}` is not a protocol wasmesh serves (h2, http/1.1)"),
                ));
            }
        }
    }
    Ok(names)
}

/// A plugin reference must name a plugin of kind `want`.
fn plugin_ref(
    plugins: &HashMap<&str, PluginKind>,
    path: Vec<Segment>,
    name: &str,
    want: PluginKind,
) -> Result<(), Violation> {
    match plugins.get(name) {
        None => Err(violation(path, format!("unknown plugin `{name}`"))),
        Some(&kind) if kind != want => {
            Err(violation(path, format!("plugin `{name}` is a {}, not a {}", kind.as_str(), want.as_str())))
        }
        Some(_) => Ok(()),
    }
}

fn validate_services<'a>(
    services: &'a [ServiceConfig],
    plugins: &HashMap<&str, PluginKind>,
) -> Result<HashSet<&'a str>, Violation> {
    let mut names = HashSet::new();
    for (i, s) in services.iter().enumerate() {
        let at = |field| vec![Key("services"), Index(i), Key(field)];
        unique(&mut names, &s.name, || at("name"), "service")?;
        if let Some(balancer) = &s.balancer {
            plugin_ref(plugins, at("balancer"), balancer, PluginKind::Balancer)?;
        }
        if let Some(check) = &s.health_check {
            let at = |field| vec![Key("services"), Index(i), Key("health_check"), Key(field)];
            for (field, value) in [("interval", check.interval), ("timeout", check.timeout)] {
                if value.is_zero() {
                    return Err(violation(at(field), "must be greater than zero"));
                }
            }
            for (field, value) in
                [("healthy_threshold", check.healthy_threshold), ("unhealthy_threshold", check.unhealthy_threshold)]
            {
                if value == 0 {
                    return Err(violation(at(field), "must be at least 1"));
                }
            }
            if let Some(plugin) = &check.plugin {
                plugin_ref(plugins, at("plugin"), plugin, PluginKind::HealthCheck)?;
                if check.kind != HealthCheckKind::Http {
                    return Err(violation(
                        at("plugin"),
                        "a health-check plugin judges HTTP probes: needs kind = \"http\"",
                    ));
                }
            }
        }
        match (&s.tls, s.protocol) {
            (None, UpstreamProtocol::H2) => {
                return Err(violation(at("protocol"), "h2 is HTTP/2 over TLS: add a tls table (or use h2c)"));
            }
            (Some(_), UpstreamProtocol::H2c) => {
                return Err(violation(at("protocol"), "h2c is cleartext HTTP/2: use protocol = \"h2\" with tls"));
            }
            _ => {}
        }
        if let Some(tls) = &s.tls
            && tls.client_cert.is_some() != tls.client_key.is_some()
        {
            let field = if tls.client_cert.is_some() { "client_key" } else { "client_cert" };
            return Err(violation(
                vec![Key("services"), Index(i), Key("tls"), Key(field)],
                "client_cert and client_key go together",
            ));
        }
        for (j, c) in s.contracts.iter().enumerate() {
            let at = |field| vec![Key("services"), Index(i), Key("contracts"), Index(j), Key(field)];
            if !c.path.starts_with('/') {
                return Err(violation(at("path"), "must start with `/`"));
            }
            if c.path.split('/').rev().skip(1).any(|seg| seg == "*") {
                return Err(violation(at("path"), "`*` may only be the last segment"));
            }
            if let Some(bad) = c.methods.iter().find(|m| http::Method::from_bytes(m.as_bytes()).is_err()) {
                return Err(violation(at("methods"), format!("`{bad}` is not an HTTP method")));
            }
            if c.request_schema.is_none() && c.response_schema.is_none() {
                return Err(violation(at("path"), "a contract needs request_schema, response_schema or both"));
            }
            if c.max_body_bytes == 0 {
                return Err(violation(at("max_body_bytes"), "must be greater than zero"));
            }
        }
        let mut addrs = HashSet::new();
        for (j, e) in s.endpoints.iter().enumerate() {
            let at = |field| vec![Key("services"), Index(i), Key("endpoints"), Index(j), Key(field)];
            if !(1..=10_000).contains(&e.weight) {
                return Err(violation(at("weight"), format!("{} is out of range 1..=10000", e.weight)));
            }
            if !addrs.insert(e.address) {
                return Err(violation(at("address"), format!("duplicate endpoint {}", e.address)));
            }
        }
        match (&s.balance, &s.hash_key) {
            (BalancePolicy::RingHash, None) => {
                return Err(violation(at("balance"), "ring_hash needs a `hash_key` table"));
            }
            (policy, Some(_)) if *policy != BalancePolicy::RingHash => {
                return Err(violation(at("hash_key"), "only used with balance = \"ring_hash\""));
            }
            (_, Some(HashKeyConfig::Header { name })) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                return Err(violation(at("hash_key"), format!("`{name}` is not a valid header name")));
            }
            (_, Some(HashKeyConfig::Cookie { name })) if name.is_empty() => {
                return Err(violation(at("hash_key"), "cookie name must not be empty"));
            }
            _ => {}
        }
        if s.healthy_panic_threshold > 100 {
            return Err(violation(at("healthy_panic_threshold"), "is a percentage: 0 (off) to 100"));
        }
        if let Some(retry) = &s.retry {
            let at = |field| vec![Key("services"), Index(i), Key("retry"), Key(field)];
            if retry.budget_percent > 100 {
                return Err(violation(at("budget_percent"), "is a percentage: 0 to 100"));
            }
            if retry.per_try_timeout.is_some_and(|t| t.is_zero()) {
                return Err(violation(at("per_try_timeout"), "must be greater than zero"));
            }
            if retry.backoff_max < retry.backoff_base {
                return Err(violation(at("backoff_max"), "must not be below backoff_base"));
            }
            if let Some(code) = retry.retriable_status_codes.iter().find(|c| !(100..=599).contains(*c)) {
                return Err(violation(at("retriable_status_codes"), format!("{code} is not an HTTP status")));
            }
        }
        validate_outlier(&s.outlier_detection, |field| {
            vec![Key("services"), Index(i), Key("outlier_detection"), Key(field)]
        })?;
        validate_failure_rate(&s.circuit_breaker.failure_rate, |field| {
            vec![Key("services"), Index(i), Key("circuit_breaker"), Key("failure_rate"), Key(field)]
        })?;
        let t = &s.timeouts;
        for (field, value) in [("connect", t.connect), ("request", t.request), ("idle", t.idle)] {
            if value.is_zero() {
                return Err(violation(
                    vec![Key("services"), Index(i), Key("timeouts"), Key(field)],
                    "must be greater than zero",
                ));
            }
        }
    }
    Ok(names)
}

/// Checked whether or not it is enabled: a value that makes no sense is refused either way.
fn validate_outlier(o: &OutlierConfig, at: impl Fn(&'static str) -> Vec<Segment>) -> Result<(), Violation> {
    if o.enabled && o.consecutive_5xx == 0 && o.consecutive_gateway_failure == 0 {
        return Err(violation(
            at("consecutive_gateway_failure"),
            "consecutive_5xx and consecutive_gateway_failure are both 0, so nothing would be ejected: \
             turn outlier detection off with `enabled = false`",
        ));
    }
    if o.base_ejection_time.is_zero() {
        return Err(violation(at("base_ejection_time"), "must be greater than zero"));
    }
    if o.max_ejection_time < o.base_ejection_time {
        return Err(violation(at("max_ejection_time"), "must be at least base_ejection_time"));
    }
    if o.max_ejection_percent > 100 {
        return Err(violation(at("max_ejection_percent"), format!("{} is more than 100", o.max_ejection_percent)));
    }
    Ok(())
}

/// Checked whether or not it is enabled, as [`validate_outlier`].
fn validate_failure_rate(f: &FailureRateConfig, at: impl Fn(&'static str) -> Vec<Segment>) -> Result<(), Violation> {
    if !(1..=100).contains(&f.threshold_percent) {
        return Err(violation(at("threshold_percent"), format!("{} is out of range 1..=100", f.threshold_percent)));
    }
    if f.minimum_requests == 0 {
        return Err(violation(at("minimum_requests"), "must be at least 1"));
    }
    let shown = |d| humantime_serde::re::humantime::format_duration(d);
    let window = shown(f.window);
    if f.window > FailureRateConfig::MAX_WINDOW {
        let max = shown(FailureRateConfig::MAX_WINDOW);
        return Err(violation(at("window"), format!("{window} is longer than the maximum, {max}")));
    }
    if f.window.as_secs() == 0 {
        return Err(violation(at("window"), format!("{window} is shorter than the minimum, 1s")));
    }
    if f.window.subsec_nanos() != 0 {
        return Err(violation(at("window"), format!("{window} is not a whole number of seconds")));
    }
    if f.open_duration.is_zero() {
        return Err(violation(at("open_duration"), "must be greater than zero"));
    }
    if f.half_open_requests == 0 {
        return Err(violation(at("half_open_requests"), "must be at least 1"));
    }
    Ok(())
}

fn validate_routes(
    routes: &[RouteConfig],
    listeners: &HashSet<&str>,
    services: &HashSet<&str>,
    plugins: &HashMap<&str, PluginKind>,
) -> Result<(), Violation> {
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let at = |field| vec![Key("routes"), Index(i), Key(field)];
        let at_match = |field| vec![Key("routes"), Index(i), Key("match"), Key(field)];
        unique(&mut names, &r.name, || at("name"), "route")?;
        if !services.contains(r.service.as_str()) {
            return Err(violation(at("service"), format!("unknown service `{}`", r.service)));
        }
        if let Some(unknown) = r.listeners.iter().find(|l| !listeners.contains(l.as_str())) {
            return Err(violation(at("listeners"), format!("unknown listener `{unknown}`")));
        }
        let m = &r.matcher;
        if m.path_prefix.is_some() && m.path_exact.is_some() {
            return Err(violation(at_match("path_exact"), "give either path_prefix or path_exact, not both"));
        }
        for (field, path) in [("path_prefix", &m.path_prefix), ("path_exact", &m.path_exact)] {
            if let Some(p) = path
                && !p.starts_with('/')
            {
                return Err(violation(at_match(field), format!("`{p}` must start with `/`")));
            }
        }
        if let Some(bad) = m.methods.iter().find(|x| http::Method::from_bytes(x.as_bytes()).is_err()) {
            return Err(violation(at_match("methods"), format!("`{bad}` is not a valid method")));
        }
        for (j, h) in m.headers.iter().enumerate() {
            let path = vec![Key("routes"), Index(i), Key("match"), Key("headers"), Index(j), Key("name")];
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                return Err(violation(path, format!("`{}` is not a valid header name", h.name)));
            }
        }
        if let Some(rw) = &r.rewrite
            && let Some(prefix) = &rw.prefix
        {
            if m.path_prefix.is_none() {
                return Err(violation(at("rewrite"), "rewrite.prefix needs match.path_prefix"));
            }
            if !prefix.starts_with('/') {
                return Err(violation(at("rewrite"), format!("prefix `{prefix}` must start with `/`")));
            }
        }
        if let Some(router) = &r.router {
            plugin_ref(plugins, at("router"), router, PluginKind::Router)?;
        }
        for f in &r.filters {
            plugin_ref(plugins, at("filters"), f, PluginKind::Filter)?;
        }
        if r.timeout.is_some_and(|t| t.is_zero()) {
            return Err(violation(at("timeout"), "must be greater than zero"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The error `parse` gives for one service with `extra` in its table.
    fn refusal(extra: &str) -> String {
        let text = format!("[[services]]\nname = \"s\"\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n{extra}\n");
        super::super::parse(Path::new("w.toml"), &text).expect_err(extra).to_string()
    }

    #[test]
    fn nonsense_health_panic_and_retry_settings_are_refused() {
        for (extra, expected) in [
            ("[services.health_check]\ninterval = \"0s\"", "health_check.interval: must be greater than zero"),
            ("[services.health_check]\ntimeout = \"0s\"", "health_check.timeout: must be greater than zero"),
            ("[services.health_check]\nhealthy_threshold = 0", "health_check.healthy_threshold: must be at least 1"),
            ("healthy_panic_threshold = 101", "healthy_panic_threshold: is a percentage"),
            ("[services.retry]\nbudget_percent = 150", "retry.budget_percent: is a percentage"),
            ("[services.retry]\nper_try_timeout = \"0s\"", "retry.per_try_timeout: must be greater than zero"),
            ("[services.retry]\nbackoff_base = \"2s\"\nbackoff_max = \"1s\"", "retry.backoff_max: must not be below"),
            (
                "[services.retry]\nretriable_status_codes = [99]",
                "retry.retriable_status_codes: 99 is not an HTTP status",
            ),
        ] {
            let error = refusal(extra);
            assert!(error.contains(expected), "{extra}: {error}");
        }
    }
}
