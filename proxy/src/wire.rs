//! HTTP/1.1 wire helpers both sides share: where a head ends, and the header names that
//! are matched without the general parse.

use http::HeaderName;

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

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, DATE, ETAG, HOST, USER_AGENT};

    use super::*;

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
    fn heads_end_at_the_blank_line_with_either_line_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}
