//! Entry points of the fuzz targets in `proxy/fuzz` (feature `fuzzing`): each takes the
//! fuzzer's bytes, runs one parser of the proxy on them, and panics when something that must
//! hold for any input does not. A target is one call to one of these; the unit tests below
//! replay the committed corpora through the same functions.
//!
//! Structured inputs (routes, plugin heads) are read as lines, so that corpus files stay
//! readable and the fuzzer's text mutations make sense.

use std::path::Path;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::admin::mesh_api::{BodyEndpoint, check_body};
use crate::config::{self, Config, HeaderMatchConfig, MatchConfig, RewriteConfig, RouteConfig, ServiceConfig};
use crate::plugin::{Change, HeaderInterest, RequestView, ResponseView, changes};
use crate::routing::{self, Matcher, Rewrite};
use wasmesh_http1::RawHeaders;
use wasmesh_http1::client;
use wasmesh_http1::decode::{BodyDecoder, Chunked, Decoded};
use wasmesh_http1::head::{MAX_HEADERS, NameClass, classify, head_end};
use wasmesh_http1::server::{Parsed, parse_request};

/// A fuzz target: the fuzzer's bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the `proxy/fuzz/fuzz_targets/*.rs` files and corpus folders).
/// `plugin_head` is run here without the SDK's side (see [`plugin_head`]).
pub const TARGETS: &[(&str, Target)] = &[
    ("http1_request", http1_request),
    ("chunked_body", chunked_body),
    ("upstream_response", upstream_response),
    ("plugin_head", |data| plugin_head(data, None)),
    ("routing", routing),
    ("config", config),
    ("mesh_api", mesh_api),
];

/// The downstream fast path's request head parser, on the head the connection loop would cut
/// from `data`. A head it serves itself carries no body and asks for no upgrade (anything
/// else goes to hyper, which frames bodies), and says what httparse says.
pub fn http1_request(data: &[u8]) {
    let Some(end) = head_end(data) else { return };
    let head = Bytes::copy_from_slice(&data[..end]);
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"), "a head ends at its blank line");
    let Parsed::Serve(parsed) = parse_request(&head, MAX_HEADERS, |head| head) else { return };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut reference = httparse::Request::new(&mut slots);
    assert!(matches!(reference.parse(&head), Ok(httparse::Status::Complete(n)) if n == head.len()));
    assert_eq!(reference.version, Some(1));
    let request = &parsed;
    assert_eq!(Some(request.method.as_str()), reference.method);
    assert_eq!(request.headers.len(), reference.headers.len(), "every header line is kept");
    let mut close = false;
    for h in reference.headers.iter() {
        let name = h.name.as_bytes();
        assert!(!name.eq_ignore_ascii_case(b"transfer-encoding") && !name.eq_ignore_ascii_case(b"upgrade"));
        if name.eq_ignore_ascii_case(b"content-length") {
            assert_eq!(h.value.trim_ascii(), b"0", "a body is hyper's to frame");
        }
        if name.eq_ignore_ascii_case(b"connection") {
            close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    assert_eq!(parsed.keep_alive, !close);
    assert!(!request.headers.contains_key(TRANSFER_ENCODING) && !request.headers.contains_key(UPGRADE));
    assert!(request.headers.get_all(CONTENT_LENGTH).iter().all(|v| v.as_bytes().trim_ascii() == b"0"));
    // What it serves meets the proxy's Host rules, which it checked as it parsed.
    let hosts: Vec<_> = request.headers.get_all(HOST).iter().collect();
    assert!(matches!(hosts[..], [host] if wasmesh_http1::is_valid_host(host.as_bytes())), "one valid Host");
    assert!(request.uri.authority().is_none(), "an origin-form target");
}

/// How decoding a body ended.
#[derive(Debug, PartialEq, Eq)]
enum BodyEnd {
    /// Complete; these bytes follow it.
    Done(Vec<u8>),
    /// The input ran out first.
    NeedMore,
    /// Refused.
    Invalid,
}

/// Decodes `wire` with `decoder`, fed `step` bytes at a time as reads would bring them.
fn decode_body(mut decoder: BodyDecoder, wire: &[u8], step: usize) -> (Vec<u8>, BodyEnd) {
    let (mut buf, mut body) = (BytesMut::new(), Vec::new());
    let mut pieces = wire.chunks(step.max(1));
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "no empty data frames");
                body.extend_from_slice(&data);
            }
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return (body, BodyEnd::NeedMore),
            },
            Ok(Decoded::Done) => {
                pieces.for_each(|piece| buf.extend_from_slice(piece));
                return (body, BodyEnd::Done(buf.to_vec()));
            }
            Err(_) => return (body, BodyEnd::Invalid),
        }
    }
}

/// The upstream body decoder (chunked mostly; the first byte picks the framing and how many
/// bytes each read brings): decoding the same bytes read in pieces or at once gives the same
/// body and the same end, and never more bytes than came in.
pub fn chunked_body(data: &[u8]) {
    let Some((&control, wire)) = data.split_first() else { return };
    let decoder = match control >> 6 {
        0 => BodyDecoder::Length(u64::from(control & 0x3f)),
        1 => BodyDecoder::Eof,
        _ => BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }),
    };
    let whole = decode_body(decoder, wire, wire.len());
    assert!(whole.0.len() <= wire.len());
    let step = usize::from(control & 0x0f) + 1;
    assert_eq!(decode_body(decoder, wire, step), whole, "read {step} bytes at a time");
}

/// The upstream response head parser, its framing and the raw header lines: parsing with and
/// without raw lines agrees on the status, the framing, the connection's reuse and the
/// end-to-end headers; removing a raw line removes exactly that header; written raw lines
/// parse back to the same headers.
pub fn upstream_response(data: &[u8]) {
    let (mut raw_buf, mut map_buf) = (BytesMut::from(data), BytesMut::from(data));
    let (with_raw, with_map) =
        (client::parse_response_head(&mut raw_buf, true), client::parse_response_head(&mut map_buf, false));
    let (with_raw, with_map) = match (with_raw, with_map) {
        (Ok(Some(r)), Ok(Some(m))) => (r, m),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => return,
        (r, m) => panic!("the two parses disagree: {r:?} / {m:?}"),
    };
    assert_eq!(raw_buf, map_buf, "both leave the body");
    assert_eq!((with_raw.status, with_raw.version), (with_map.status, with_map.version));
    assert_eq!(client::keeps_alive(&with_raw), client::keeps_alive(&with_map));
    for method in [Method::GET, Method::HEAD] {
        let (r, m) = (client::response_framing(&method, &with_raw), client::response_framing(&method, &with_map));
        assert_eq!(r.as_ref().ok(), m.as_ref().ok(), "{method} framing");
    }
    if let Some(raw) = &with_raw.raw {
        assert!(with_raw.headers.is_empty());
        let mut from_raw = HeaderMap::new();
        raw.append_to(&mut from_raw);
        let mut end_to_end = with_map.headers.clone();
        let hop_by_hop: Vec<HeaderName> = end_to_end
            .keys()
            .filter(|name| {
                !matches!(
                    classify(name.as_str().as_bytes()),
                    NameClass::Other | NameClass::Date | NameClass::ContentLength
                )
            })
            .cloned()
            .collect();
        for name in &hop_by_hop {
            end_to_end.remove(name);
        }
        assert_eq!(from_raw, end_to_end, "raw lines hold the end-to-end headers");
        check_raw_lines(raw, data);
    }
    if let Ok(decoder) = client::response_framing(&Method::GET, &with_map) {
        let (body, _) = decode_body(decoder, &map_buf, map_buf.len());
        assert!(body.len() <= map_buf.len());
    }
}

/// What must hold of a response's raw lines `raw`: they write out as header lines that parse
/// back to themselves, and removing a header (one named in them, picked by `data`) takes out
/// its lines and only those, or changes nothing when the rest would not fit.
fn check_raw_lines(raw: &RawHeaders, data: &[u8]) {
    let lines: Vec<(Vec<u8>, Vec<u8>)> = raw.lines().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    let mut written = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
    raw.write_to(&mut written);
    written.extend_from_slice(b"\r\n");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut reparsed = httparse::Response::new(&mut slots);
    assert!(matches!(reparsed.parse(&written), Ok(httparse::Status::Complete(_))), "written lines parse");
    let again: Vec<(Vec<u8>, Vec<u8>)> =
        reparsed.headers.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.trim_ascii().to_vec())).collect();
    assert_eq!(again, lines);
    let Some((name, _)) = lines.get(usize::from(data.last().copied().unwrap_or(0)) % lines.len().max(1)) else {
        return;
    };
    let mut removed = raw.clone();
    if removed.remove(name) {
        let left: Vec<(Vec<u8>, Vec<u8>)> = removed.lines().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            lines.iter().filter(|(n, _)| !n.eq_ignore_ascii_case(name)).cloned().collect();
        assert_eq!(left, want);
    } else {
        assert_eq!(removed.lines().count(), lines.len(), "a refused removal changes nothing");
    }
}

/// Fields of a structured input: one per line (`\n`), empty once the input runs out.
struct Lines<'a>(std::slice::Split<'a, u8, fn(&u8) -> bool>);

impl<'a> Lines<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self(data.split(is_line_end as fn(&u8) -> bool))
    }

    fn bytes(&mut self) -> &'a [u8] {
        self.0.next().unwrap_or_default()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// The next line, `None` when it is empty.
    fn optional(&mut self) -> Option<String> {
        Some(self.text()).filter(|t| !t.is_empty())
    }

    /// The next line's space-separated words.
    fn words(&mut self) -> Vec<String> {
        self.text().split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect()
    }

    /// `name: value` lines into `headers` up to a line `--` (or the end); lines that are not
    /// a valid header are skipped.
    fn headers(&mut self, headers: &mut HeaderMap) {
        while let Some(line) = self.0.next().filter(|l| *l != b"--") {
            if let Some((name, value)) = header_line(line) {
                headers.append(name, value);
            }
        }
    }
}

fn is_line_end(b: &u8) -> bool {
    *b == b'\n'
}

/// A `name: value` line as a header, if it is a valid one.
fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    Some((name, HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?))
}

/// A packed head as a plugin reads it back: method, authority, path, client address, headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Method, authority, path and client address.
    pub fields: [String; 4],
    /// Header names and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The plugin side of the packed layouts, which the `plugin_head` target supplies from the
/// plugin SDK (built for plugins, it is no dependency of this crate).
pub trait PluginSide {
    /// A packed `request-head` as the SDK reads it.
    fn request(&self, packed: Vec<u8>) -> Unpacked;
    /// A packed `response-head` as the SDK reads it: its request, its status, its headers.
    fn response(&self, packed: Vec<u8>) -> (Unpacked, u16, Vec<(String, Vec<u8>)>);
    /// `changes` packed by the SDK's `Changes`.
    fn pack(&self, changes: &[Change<'_>]) -> Vec<u8>;
}

/// The packed plugin heads and mutations. `data` is read once as a packed `mutations`
/// buffer (every change read whole, or an error that ends the reading) and, with `plugin`,
/// as packed heads the SDK reads (without failing); then as lines: a request (method,
/// authority, path, client address), the headers the plugin reads (`*` for all), a status,
/// request headers, raw response lines (`!` marks one dropped between runs), response
/// headers, then changes (`set`/`append name value`, `remove name`, `path p`). What the proxy
/// packs the SDK reads back as it was, and the changes the SDK packs the proxy reads back.
pub fn plugin_head(data: &[u8], plugin: Option<&dyn PluginSide>) {
    let mut read = changes(data);
    let mut at = 0;
    for change in read.by_ref() {
        let Ok(change) = change else { break };
        // A tag, then each field after its 4-byte length.
        at += 1 + match change {
            Change::Set(name, value) | Change::Append(name, value) => 8 + name.len() + value.len(),
            Change::Remove(field) | Change::Path(field) => 4 + field.len(),
        };
        assert!(at <= data.len());
    }
    assert!(read.next().is_none(), "nothing is read past a malformed change");
    if let Some(plugin) = plugin {
        plugin.request(data.to_vec());
        plugin.response(data.to_vec());
    }

    let mut lines = Lines::new(data);
    let fields = [lines.text(), lines.text(), lines.text(), lines.text()];
    let declared = lines.words();
    let interest =
        HeaderInterest::new((declared.first().map(String::as_str) != Some("*")).then_some(declared.as_slice()));
    let status = lines.text().trim().parse::<u16>().unwrap_or(200);
    let (mut request_headers, mut response_headers) = (HeaderMap::new(), HeaderMap::new());
    lines.headers(&mut request_headers);
    let raw = raw_response_lines(&mut lines);
    lines.headers(&mut response_headers);
    let edits: Vec<(String, Vec<String>)> = std::iter::from_fn(|| lines.0.next())
        .map(|line| {
            let mut words = String::from_utf8_lossy(line).split(' ').map(str::to_owned).collect::<Vec<_>>().into_iter();
            (words.next().unwrap_or_default(), words.collect())
        })
        .collect();

    let request = RequestView {
        method: &fields[0],
        authority: &fields[1],
        path: &fields[2],
        client_addr: &fields[3],
        headers: &request_headers,
    };
    let response = ResponseView { status, raw: raw.as_ref(), headers: &response_headers };
    let mut packed = Vec::new();
    request.encode(&interest, &mut packed);
    let expected_request = Unpacked { fields: fields.clone(), headers: interest.list(&request_headers) };
    let mut expected_response = Vec::new();
    if let Some(raw) = &raw {
        for (name, value) in raw.lines().filter(|(name, _)| interest.reads(name)) {
            expected_response.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()));
        }
    }
    expected_response.extend(interest.list(&response_headers));
    let Some(plugin) = plugin else { return };
    assert_eq!(plugin.request(packed.clone()), expected_request.clone());
    packed.clear();
    response.encode(&request, &interest, &mut packed);
    assert_eq!(plugin.response(packed), (expected_request, status, expected_response));

    let changes_in: Vec<Change<'_>> = edits
        .iter()
        .filter_map(|(op, args)| {
            let arg = |i: usize| args.get(i).map_or(&b""[..], |a| a.as_bytes());
            match op.as_str() {
                "set" => Some(Change::Set(arg(0), arg(1))),
                "append" => Some(Change::Append(arg(0), arg(1))),
                "remove" => Some(Change::Remove(arg(0))),
                "path" => Some(Change::Path(arg(0))),
                _ => None,
            }
        })
        .collect();
    let packed = plugin.pack(&changes_in);
    let read_back: Result<Vec<Change<'_>>, _> = changes(&packed).collect();
    assert_eq!(read_back, Ok(changes_in));
}

/// Raw response lines up to a line `--`, as the upstream reader keeps them: valid header
/// lines, each kept unless marked `!`; `None` when there are none or they take too many runs.
fn raw_response_lines(lines: &mut Lines<'_>) -> Option<RawHeaders> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    let mut kept = Vec::new();
    while let Some(line) = lines.0.next().filter(|l| *l != b"--") {
        let (keep, line) = match line.strip_prefix(b"!") {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let Some((name, value)) = header_line(line) else { continue };
        let start = head.len();
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
        if keep {
            kept.push((start, head.len()));
        }
    }
    head.extend_from_slice(b"\r\n");
    let mut raw = RawHeaders::new(Bytes::from(head));
    (!kept.is_empty() && kept.iter().all(|&(start, end)| raw.keep_line(start, end))).then_some(raw)
}

/// A service the `routing` target's routes go to.
static SERVICE: LazyLock<ServiceConfig> =
    LazyLock::new(|| toml::from_str("name = \"s\"").expect("a service with defaults"));

/// Route matching and rewriting: a route (lines: host, path prefix, exact path, methods,
/// `name` or `name=value` headers, rewrite prefix) that passes validation, and a request
/// (lines: `Host`, request target, method, `name: value` headers). A match holds each of the
/// route's conditions; a rewrite keeps the query and starts with its prefix.
pub fn routing(data: &[u8]) {
    let mut lines = Lines::new(data);
    let matcher = MatchConfig {
        host: lines.optional(),
        path_prefix: lines.optional(),
        path_exact: lines.optional(),
        methods: lines.words(),
        headers: lines
            .words()
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((name, value)) => HeaderMatchConfig { name: name.to_owned(), value: Some(value.to_owned()) },
                None => HeaderMatchConfig { name: w, value: None },
            })
            .collect(),
    };
    let rewrite = lines.optional().map(|prefix| RewriteConfig { prefix: Some(prefix) });
    let route = RouteConfig {
        name: "r".into(),
        listeners: Vec::new(),
        matcher,
        service: SERVICE.name.clone(),
        rewrite,
        timeout: None,
        router: None,
        filters: Vec::new(),
    };
    let host_header = lines.bytes().to_vec();
    let Ok(target) = Uri::from_maybe_shared(Bytes::from(lines.bytes().to_vec())) else { return };
    let Ok(method) = Method::from_bytes(lines.bytes()) else { return };
    let mut headers = HeaderMap::new();
    lines.headers(&mut headers);
    let config = Config { services: vec![SERVICE.clone()], routes: vec![route], ..Config::default() };
    if !config::is_valid(&config) {
        return;
    }
    let route = &config.routes[0];
    let compiled = Matcher::new(&route.matcher);
    // As the forwarder takes the host: `Host` if it is text, else the target's authority.
    let host = Some(&host_header).filter(|h| !h.is_empty()).and_then(|h| HeaderValue::from_bytes(h).ok());
    let host = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or_else(|| target.authority().map(|a| a.as_str()))
        .map_or("", routing::host_without_port);
    let view = routing::MatchInput { host, path: target.path(), method: &method, headers: &headers };
    if !compiled.matches(&view) {
        return;
    }
    let m = &route.matcher;
    if let Some(exact) = &m.path_exact {
        assert_eq!(target.path(), exact);
    }
    if let Some(prefix) = &m.path_prefix {
        assert!(target.path().starts_with(prefix.trim_end_matches('/')));
    }
    if let Some(pattern) = &m.host {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('*') {
            Some(suffix) => assert!(host.to_ascii_lowercase().ends_with(suffix)),
            None => assert_eq!(host.to_ascii_lowercase(), pattern),
        }
    }
    assert!(m.methods.is_empty() || m.methods.iter().any(|x| x == method.as_str()));
    if let Some(rewrite) = route.rewrite.as_ref().and_then(Rewrite::new) {
        let path_and_query = target.path_and_query().map_or("/", |p| p.as_str());
        let rewritten = rewrite.apply(&compiled, path_and_query);
        let prefix = route.rewrite.as_ref().and_then(|r| r.prefix.as_deref()).unwrap_or_default();
        assert!(rewritten.starts_with(prefix.trim_end_matches('/')), "{rewritten} from {prefix}");
        if let Some(query) = target.query() {
            assert!(rewritten.ends_with(&format!("?{query}")), "{rewritten} keeps ?{query}");
        }
    }
}

/// The configuration loader on any text: it loads, or fails with an error that locates
/// itself within the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = config::parse(Path::new("fuzz.toml"), text) {
        let lines = text.split('\n').count();
        assert!(e.line.is_none_or(|line| (1..=lines).contains(&line)), "line {:?} of {lines}", e.line);
        assert!(!e.to_string().is_empty());
    }
}

/// The mesh API's JSON bodies: the first byte picks `register`, `deregister` or `call`, the
/// rest is the body, checked as the endpoint checks it before storing, resolving or sending
/// anything.
pub fn mesh_api(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let endpoint = match pick % 3 {
        0 => BodyEndpoint::Register,
        1 => BodyEndpoint::Deregister,
        _ => BodyEndpoint::Call,
    };
    if let Err(message) = check_body(endpoint, body) {
        assert!(!message.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the committed corpora (`proxy/fuzz/corpus/<target>/`) passes its target.
    #[test]
    fn the_committed_corpora_pass_their_targets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut count = 0;
            for entry in entries {
                let path = entry.expect("a corpus entry").path();
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                count += 1;
            }
            assert!(count > 0, "{name} has a corpus");
        }
    }
}
