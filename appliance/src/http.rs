//! HTTP/1.1 request heads: parsing and limits. Pure logic, host-tested; the
//! network service feeds it the bytes a connection sent so far.
//!
//! RFC 9112 where it matters for safety: a line may end in CRLF or a bare LF
//! (§2.2), a bare CR elsewhere is an error; two Content-Length values that
//! differ, and any Transfer-Encoding (we implement no transfer coding), are
//! answered 400 at once (§6.1, §6.3: the message framing would be ambiguous,
//! the shape of request smuggling); `Expect: 100-continue` is flagged so the
//! service answers `100 Continue` at once, any other expectation gets 417
//! (RFC 9110 §10.1.1).

/// Largest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 4096;
/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// A parsed request head (borrowing the connection's bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `Authorization: Bearer <token>`, if sent.
    pub bearer: Option<&'a str>,
    pub content_length: usize,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before the body.
    pub expect_continue: bool,
}

impl Request<'_> {
    /// `key=value` from the query string.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query?.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
}

/// What the bytes received so far amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Not a whole head yet.
    Incomplete,
    /// A whole head (the body may still be arriving: see `content_length`).
    Complete(Request<'a>),
    /// An error to answer with this status and close.
    Error(u16),
}

/// Parse the head of a request from the bytes received so far. Never panics,
/// whatever the bytes.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    // Empty lines before the request line are ignored (RFC 9112 §2.2).
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let Some((end, head_len)) = head_end(&buf[skip..]).map(|(e, h)| (skip + e, skip + h)) else {
        return if buf.len() > MAX_HEAD { Parse::Error(431) } else { Parse::Incomplete };
    };
    if head_len > MAX_HEAD {
        return Parse::Error(431);
    }
    let Ok(head) = core::str::from_utf8(&buf[skip..end]) else { return Parse::Error(400) };
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (m, target, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if parts.next().is_some() || !(version == "HTTP/1.1" || version == "HTTP/1.0") || !target.starts_with('/') || m.is_empty() {
        return Parse::Error(400);
    }
    let method = match m {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ if m.bytes().all(|b| b.is_ascii_uppercase()) => Method::Other,
        _ => return Parse::Error(400),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let (mut bearer, mut content_length, mut expect_continue) = (None, None::<usize>, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Parse::Error(400) };
        if line.contains('\r') || name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Parse::Error(400);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            bearer = value.strip_prefix("Bearer ").map(str::trim);
        } else if name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 5, 5` and repeated fields must all agree.
            for v in value.split(',').map(str::trim) {
                let Ok(n) = v.parse::<usize>() else { return Parse::Error(400) };
                if content_length.is_some_and(|c| c != n) {
                    return Parse::Error(400);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parse::Error(400);
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Parse::Error(417);
            }
            expect_continue = true;
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Parse::Error(413);
    }
    Parse::Complete(Request { method, path, query, bearer, content_length, head_len, expect_continue })
}

/// Where the head ends: (end of its last line, bytes up to and including
/// the empty line), with CRLF or bare LF line ends.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(k) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + k;
        let line_start = i;
        let line = &buf[line_start..nl];
        if line_start > 0 && (line.is_empty() || line == b"\r") {
            let end = line_start - if line_start >= 2 && buf[line_start - 2] == b'\r' { 2 } else { 1 };
            return Some((end, nl + 1));
        }
        i = nl + 1;
    }
    None
}

/// The reason phrase of the statuses we send.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let Parse::Complete(r) = parse(b"GET /trace?follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n") else { panic!() };
        assert_eq!((r.method, r.path, r.bearer), (Method::Get, "/trace", Some("s3cret")));
        assert_eq!(r.query_value("follow"), Some("1"));
        assert_eq!(r.query_value("nope"), None);
        let Parse::Complete(r) = parse(b"POST /control/tracing HTTP/1.0\r\nContent-Length: 3\r\n\r\noff") else { panic!() };
        assert_eq!((r.method, r.content_length, r.head_len), (Method::Post, 3, 53));
        assert_eq!(parse(b"GET /status HTTP/1.1\r\nHost"), Parse::Incomplete);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b"garbage\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"GET status HTTP/1.1\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n"), Parse::Error(413));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Parse::Error(431), "no end of head within the limit");
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Parse::Error(431));
        assert!(matches!(parse(b"DELETE / HTTP/1.1\r\n\r\n"), Parse::Complete(Request { method: Method::Other, .. })));
        assert_eq!(parse(b"\r\n\r\n"), Parse::Incomplete, "empty lines before a request line are ignored");
        assert!(matches!(parse(b"\r\nGET / HTTP/1.1\r\n\r\n"), Parse::Complete(Request { head_len: 20, .. })));
        assert_eq!(parse(b"\xff\xfe / HTTP/1.1\r\n\r\n"), Parse::Error(400));
    }

    /// Arbitrary bytes never panic, and whatever parses is consistent.
    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator (xorshift), biased towards HTTP-ish bytes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"GETPOST /?=&:\r\n HTTP/1.0Content-Length: 0123456789Bearer \xff\x00";
        for _ in 0..20_000 {
            let mut buf = std::vec::Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(if x.is_multiple_of(5) { (x >> 8) as u8 } else { alphabet[(x >> 16) as usize % alphabet.len()] });
            }
            if let Parse::Complete(r) = parse(&buf) {
                assert!(r.head_len <= buf.len() && r.path.starts_with('/') && r.content_length <= MAX_BODY);
            }
        }
    }

    #[test]
    fn rfc_9112_framing() {
        // Bare LF line ends are accepted, mixed too.
        let Parse::Complete(r) = parse(b"GET /status HTTP/1.1\nHost: x\n\n") else { panic!() };
        assert_eq!((r.path, r.head_len), ("/status", 30));
        let Parse::Complete(r) = parse(b"POST /control/tracing HTTP/1.1\r\nContent-Length: 3\n\r\noff") else { panic!() };
        assert_eq!((r.content_length, r.head_len), (3, 52));
        assert_eq!(parse(b"GET /status HTTP/1.1\nHost: x\n"), Parse::Incomplete);
        // A bare CR inside a line is an error.
        assert_eq!(parse(b"GET /status HTTP/1.1\r\nX: a\rb\r\n\r\n"), Parse::Error(400));
        // Content-Length: repeated and equal is one value; different is an error.
        let Parse::Complete(r) = parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok") else { panic!() };
        assert_eq!(r.content_length, 2);
        assert!(matches!(parse(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok"), Parse::Complete(Request { content_length: 2, .. })));
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"), Parse::Error(400));
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nok"), Parse::Error(400));
        // Any transfer coding is refused (with or without a length).
        assert_eq!(parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Parse::Error(400));
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"), Parse::Error(400));
        // No whitespace between a field name and its colon (§5.1).
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length : 2\r\n\r\nok"), Parse::Error(400));
        // Expectations.
        let Parse::Complete(r) = parse(b"POST /control/tracing HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") else { panic!() };
        assert!(r.expect_continue);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), Parse::Error(417));
    }
}
