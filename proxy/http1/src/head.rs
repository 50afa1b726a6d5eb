//! What both sides do with a head before its fields are read: where it ends, how large it may
//! be, its header names (the common ones matched without the general parse), and whether a
//! `Host` is valid.

use http::HeaderName;

/// Whether `value` is a valid `Host`: `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3.2.3), an IP
/// literal in brackets or a reg-name (which IPv4 addresses are, too). Empty is valid: it is
/// what a client sends for a target without an authority.
pub fn is_valid_host(value: &[u8]) -> bool {
    if let [b'[', rest @ ..] = value {
        return match rest.iter().position(|&b| b == b']') {
            Some(close)
                if close > 0 && rest[..close].iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                is_port(&rest[close + 1..])
            }
            _ => false,
        };
    }
    // A reg-name, in one pass: the check runs on every request's `Host`.
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if REG_NAME[usize::from(b)] {
            i += 1;
        } else if b == b':' {
            return value[i + 1..].iter().all(u8::is_ascii_digit);
        } else if b == b'%' && value.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// Whether `rest`, after an IP literal, is nothing or `:` and a port's digits.
fn is_port(rest: &[u8]) -> bool {
    match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The bytes RFC 3986 allows in a `reg-name` as they are: unreserved characters and
/// sub-delimiters.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// Heads larger than this are refused (upstream) or left to hyper (downstream).
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers beyond this count are refused (upstream) or left to hyper (downstream).
pub const MAX_HEADERS: usize = 100;

/// The length of the head at the start of `buf` (through its blank line), accepting bare LF
/// line ends as httparse does; `None` while it is incomplete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|lf| match buf.get(lf + 1..lf + 3) {
        Some([b'\r', b'\n']) => Some(lf + 3),
        Some([b'\n', _]) => Some(lf + 2),
        None if buf.get(lf + 1) == Some(&b'\n') => Some(lf + 2),
        _ => None,
    })
}

/// The header name `raw`, which httparse has accepted as a token: the names most requests and
/// responses carry are matched by length and then bytes, cheaper than the general parse in
/// `HeaderName::from_bytes` (a sixth of a response head's cost); others take that parse.
pub fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match common_name(raw) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(raw),
    }
}

fn common_name(raw: &[u8]) -> Option<HeaderName> {
    use http::header::{
        ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, ACCEPT_RANGES, AUTHORIZATION, CACHE_CONTROL, CONNECTION,
        CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, DATE, ETAG, HOST, LAST_MODIFIED, ORIGIN, REFERER,
        SERVER, TRANSFER_ENCODING, USER_AGENT, VARY,
    };
    // Within a length, the names responses carry come first (the upstream side parses more heads).
    let candidates: &[(&[u8], HeaderName)] = match raw.len() {
        4 => &[(b"date", DATE), (b"etag", ETAG), (b"vary", VARY), (b"host", HOST)],
        6 => &[(b"server", SERVER), (b"accept", ACCEPT), (b"cookie", COOKIE), (b"origin", ORIGIN)],
        7 => &[(b"referer", REFERER)],
        10 => &[(b"connection", CONNECTION), (b"user-agent", USER_AGENT)],
        12 => &[(b"content-type", CONTENT_TYPE)],
        13 => &[
            (b"cache-control", CACHE_CONTROL),
            (b"last-modified", LAST_MODIFIED),
            (b"accept-ranges", ACCEPT_RANGES),
            (b"authorization", AUTHORIZATION),
        ],
        14 => &[(b"content-length", CONTENT_LENGTH)],
        15 => &[(b"accept-encoding", ACCEPT_ENCODING), (b"accept-language", ACCEPT_LANGUAGE)],
        16 => &[(b"content-encoding", CONTENT_ENCODING)],
        17 => &[(b"transfer-encoding", TRANSFER_ENCODING)],
        _ => return None,
    };
    candidates.iter().find(|(known, _)| is_token_lowercase(raw, known)).map(|(_, name)| name.clone())
}

/// Whether the header name `raw`, which httparse accepted as a token, is the lower-case `known`
/// in any case. Setting bit 0x20 lower-cases a letter; no other token character becomes a
/// letter, digit or `-` by it, so one OR per byte, without branches, replaces the per-byte
/// case folding of `eq_ignore_ascii_case` (a seventh of a response head's parse).
fn is_token_lowercase(raw: &[u8], known: &[u8]) -> bool {
    raw.len() == known.len() && raw.iter().zip(known).fold(0, |diff, (r, k)| diff | ((r | 0x20) ^ k)) == 0
}

/// What a header name means to the framing and hop-by-hop rules (RFC 9110 §7.6.1, RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    /// `Connection`: hop-by-hop, and may name more hop-by-hop headers.
    Connection,
    /// `TE`: hop-by-hop, though `TE: trailers` is passed on (gRPC needs it).
    Te,
    /// `Transfer-Encoding`: hop-by-hop; frames the body.
    TransferEncoding,
    /// `Upgrade`: hop-by-hop unless the protocol switch goes through.
    Upgrade,
    /// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate` or `Proxy-Authorization`.
    HopByHop,
    /// `Content-Length`.
    ContentLength,
    /// `Date`.
    Date,
    /// Any other name: end to end.
    Other,
}

/// The class of the header name `raw` (a token, in any case): one length comparison for most
/// names, then at most two byte comparisons.
pub fn classify(raw: &[u8]) -> NameClass {
    let is = |known: &[u8]| is_token_lowercase(raw, known);
    match raw.len() {
        2 if is(b"te") => NameClass::Te,
        4 if is(b"date") => NameClass::Date,
        7 if is(b"upgrade") => NameClass::Upgrade,
        10 if is(b"connection") => NameClass::Connection,
        10 if is(b"keep-alive") => NameClass::HopByHop,
        14 if is(b"content-length") => NameClass::ContentLength,
        16 if is(b"proxy-connection") => NameClass::HopByHop,
        17 if is(b"transfer-encoding") => NameClass::TransferEncoding,
        18 if is(b"proxy-authenticate") => NameClass::HopByHop,
        19 if is(b"proxy-authorization") => NameClass::HopByHop,
        _ => NameClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, DATE, ETAG, HOST, USER_AGENT};

    use super::*;

    #[test]
    fn hosts_are_checked_against_rfc_3986() {
        for valid in ["", "a.example", "a.example:8080", "127.0.0.1:80", "[::1]", "[::1]:443", "x%41y", "a_b~c:"] {
            assert!(is_valid_host(valid.as_bytes()), "{valid}");
        }
        for invalid in ["a b", "a/b", "a@b", "a:8o", "[::1", "[]", "[::1]x", "x%4", "x%zz", "a\u{7f}", "é"] {
            assert!(!is_valid_host(invalid.as_bytes()), "{invalid}");
        }
    }

    #[test]
    fn common_names_match_in_any_case_and_nothing_else() {
        for raw in ["content-length", "Content-Length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"] {
            assert_eq!(common_name(raw.as_bytes()), Some(CONTENT_LENGTH), "{raw}");
        }
        assert_eq!(common_name(b"Date"), Some(DATE));
        assert_eq!(common_name(b"ETag"), Some(ETAG));
        assert_eq!(common_name(b"Host"), Some(HOST));
        assert_eq!(common_name(b"User-Agent"), Some(USER_AGENT));
        // Same lengths, other names: the general parse takes them, with the same result.
        for raw in ["content_length", "content-lengti", "dat_", "x-served-by-abc"] {
            assert_eq!(common_name(raw.as_bytes()), None, "{raw}");
            assert_eq!(header_name(raw.as_bytes()).ok(), HeaderName::from_bytes(raw.as_bytes()).ok());
        }
    }

    #[test]
    fn names_classify_in_any_case() {
        use NameClass::*;
        for (raw, class) in [
            ("Connection", Connection),
            ("te", Te),
            ("Transfer-Encoding", TransferEncoding),
            ("UPGRADE", Upgrade),
            ("Keep-Alive", HopByHop),
            ("Proxy-Connection", HopByHop),
            ("Proxy-Authenticate", HopByHop),
            ("proxy-authorization", HopByHop),
            ("Content-Length", ContentLength),
            ("date", Date),
            ("x-connection", Other),
            ("tf", Other),
            ("content-lengtx", Other),
        ] {
            assert_eq!(classify(raw.as_bytes()), class, "{raw}");
        }
    }

    #[test]
    fn heads_end_at_the_blank_line_with_either_line_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}
