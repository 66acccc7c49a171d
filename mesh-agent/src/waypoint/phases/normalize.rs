//! Normalize: the request is put in one canonical form before anything looks at
//! it, as Istio's default (`pathNormalization` BASE + MERGE_SLASHES, Envoy's
//! `normalize_path` and `merge_slashes`): percent-encoded unreserved characters are
//! decoded and other escapes upper-cased (RFC 3986 6.2.2), runs of `/` merged, dot
//! segments removed (RFC 3986 5.2.4). The host is lower-cased, and Host and the
//! request target must agree. Routing, authorization and the upstream all see the
//! result, so `//admin`, `/%61dmin`, `/./admin` and `/x/../admin` are `/admin` to each
//! of them. Escaped slashes (`%2F`, `%5C`) are kept as they are (Istio's default).
//!
//! Hop-by-hop headers (RFC 9110 7.6.1: the fixed set and every header `Connection`
//! names) go here too, for every upstream protocol. The only upgrade passed on is
//! HTTP/1.1 `Upgrade: websocket`; any other (`h2c` above all, which would carry
//! HTTP/2 to the backend past every per-request check) is dropped and the request
//! forwarded as an ordinary one, as Envoy does.
use http::{header, request::Parts, uri::PathAndQuery, StatusCode, Uri};

use crate::waypoint::{
    log::RequestLog,
    reply::{LocalReply, ResponseFlag},
};

/// Why a request's target cannot be normalised (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a '%' not followed by two hex digits")]
    BadEscape,
    #[error("an escape that decodes to a control character or NUL")]
    ControlEscape,
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("Host and the request target name different hosts")]
    HostMismatch,
}

fn bad_request(m: Malformed) -> LocalReply {
    LocalReply::new(
        StatusCode::BAD_REQUEST,
        format!("bad request: {m}\n"),
        ResponseFlag::DownstreamProtocolError,
    )
}

/// The normalize phase: rewrites `parts` in place and records what the log shows.
/// Returns the upgrade a client asked for and did not get (to be counted).
pub fn apply(parts: &mut Parts, log: &mut RequestLog) -> Result<Option<String>, LocalReply> {
    let dropped = hop_by_hop(parts);
    let host = host(parts).map_err(bad_request)?;
    // CONNECT has no path; `OPTIONS *` (asterisk-form) none to normalise.
    if parts.method == http::Method::CONNECT
        || parts.uri.path_and_query().is_none()
        || parts.uri.path() == "*"
    {
        log.authority = host;
        return Ok(dropped);
    }
    let path = path(parts.uri.path()).map_err(bad_request)?;
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query =
        Some(PathAndQuery::try_from(pq).map_err(|_| bad_request(Malformed::BadEscape))?);
    if let Some(a) = uri.authority.as_ref() {
        if a.as_str() != host {
            uri.authority = host.parse().ok();
        }
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| bad_request(Malformed::BadEscape))?;
    log.path = path;
    log.authority = host;
    Ok(dropped)
}

/// Hop-by-hop headers of HTTP/1.1, never forwarded as they came.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "te",
];

/// Removes hop-by-hop headers; keeps `te: trailers` (gRPC) and a WebSocket
/// upgrade. Returns the upgrade protocol asked for when it was dropped.
fn hop_by_hop(parts: &mut Parts) -> Option<String> {
    let h = &mut parts.headers;
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let websocket = parts.version == http::Version::HTTP_11
        && upgrade.as_deref() == Some("websocket")
        && named.iter().any(|t| t == "upgrade");
    let trailers = h.get(header::TE).is_some_and(|v| v == "trailers");
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    for n in &named {
        // `Connection: host` must not take the request's host away.
        if n != "host" {
            h.remove(n.as_str());
        }
    }
    if trailers {
        h.insert(header::TE, header::HeaderValue::from_static("trailers"));
    }
    if websocket {
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        return None;
    }
    upgrade
}

/// The request's host, lower-cased: the request target's authority when it has
/// one, else the Host header (and the Host header is rewritten to it).
fn host(parts: &mut Parts) -> Result<String, Malformed> {
    let from_target = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase());
    let from_header = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let host = match (from_target, from_header) {
        (Some(t), Some(h)) if t != h => return Err(Malformed::HostMismatch),
        (Some(t), _) => t,
        (None, Some(h)) => h,
        (None, None) => String::new(),
    };
    if parts.headers.contains_key(header::HOST) {
        if let Ok(v) = header::HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    Ok(host)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 normalisation of an origin-form path plus merged slashes. Pure.
pub fn path(raw: &str) -> Result<String, Malformed> {
    if !raw.starts_with('/') {
        return Err(Malformed::NotAbsolute);
    }
    let decoded = decode_unreserved(raw.as_bytes())?;
    let merged = merge_slashes(&decoded);
    Ok(remove_dot_segments(&merged))
}

/// Decodes escapes of unreserved characters; upper-cases the others; escapes
/// raw bytes outside ASCII (a URI carries none; hyper lets them through).
fn decode_unreserved(raw: &[u8]) -> Result<String, Malformed> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if !b.is_ascii() {
            out.push_str(&format!("%{b:02X}"));
            i += 1;
            continue;
        }
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(Malformed::BadEscape);
        };
        let v = h * 16 + l;
        if v < 0x20 || v == 0x7f {
            return Err(Malformed::ControlEscape);
        }
        if is_unreserved(v) {
            out.push(v as char);
        } else {
            out.push('%');
            out.push(raw[i + 1].to_ascii_uppercase() as char);
            out.push(raw[i + 2].to_ascii_uppercase() as char);
        }
        i += 3;
    }
    Ok(out)
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 5.2.4 on an absolute path: `.` segments go, `..` removes the segment
/// before it (never above the root).
fn remove_dot_segments(p: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = p[1..].split('/').collect();
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (i, s) in parts.iter().enumerate() {
        match *s {
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if trailing_slash && !out.ends_with('/') {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_one_canonical_form() {
        let cases = [
            ("/admin", Ok("/admin")),
            ("//admin", Ok("/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/./admin", Ok("/admin")),
            ("/x/../admin", Ok("/admin")),
            ("/x/%2e%2E/admin", Ok("/admin")),
            ("/../../admin", Ok("/admin")),
            ("/a//b///c", Ok("/a/b/c")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/", Ok("/a/")),
            ("/", Ok("/")),
            ("/a%2fb", Ok("/a%2Fb")),
            ("/a%2Fb/../c", Ok("/c")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/x%7e", Ok("/x~")),
            ("/caf\u{e9}", Ok("/caf%C3%A9")),
            ("/bad%zz", Err(Malformed::BadEscape)),
            ("/bad%4", Err(Malformed::BadEscape)),
            ("/nul%00", Err(Malformed::ControlEscape)),
            ("/crlf%0d%0a", Err(Malformed::ControlEscape)),
            ("admin", Err(Malformed::NotAbsolute)),
        ];
        for (raw, want) in cases {
            assert_eq!(path(raw).as_deref(), want.as_ref().map(|s| *s), "{raw}");
        }
    }

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn hop_by_hop_headers_go_and_only_websocket_upgrades_stay() {
        let req = |headers: &[(&str, &str)]| {
            let mut b = http::Request::builder()
                .uri("/")
                .version(http::Version::HTTP_11);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).expect("request").into_parts().0
        };
        let mut p = req(&[
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("connection", "Upgrade, HTTP2-Settings, x-internal"),
            ("x-internal", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "1"),
        ]);
        assert_eq!(
            hop_by_hop(&mut p).as_deref(),
            Some("h2c"),
            "dropped and reported"
        );
        let names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);

        let mut p = req(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert_eq!(hop_by_hop(&mut p), None);
        assert_eq!(
            (&p.headers[header::UPGRADE], &p.headers[header::CONNECTION]),
            (
                &"websocket".parse::<header::HeaderValue>().unwrap(),
                &"upgrade".parse::<header::HeaderValue>().unwrap()
            )
        );

        let mut p = req(&[("te", "trailers"), ("connection", "host")]);
        p.headers.insert(header::HOST, "web".parse().unwrap());
        assert_eq!(hop_by_hop(&mut p), None);
        assert!(p.headers.contains_key(header::TE) && p.headers.contains_key(header::HOST));
    }

    #[test]
    fn the_request_is_rewritten_for_everyone_after() {
        let mut p = parts("/x/..//Admin?q=%2e", Some("Web.Shop:8080"));
        let mut log = RequestLog::default();
        apply(&mut p, &mut log).expect("normal");
        assert_eq!(p.uri.to_string(), "/Admin?q=%2e", "the query is left alone");
        assert_eq!(p.headers[header::HOST], "web.shop:8080");
        assert_eq!(
            (log.path.as_str(), log.authority.as_str()),
            ("/Admin", "web.shop:8080")
        );

        let mut p = parts("http://WEB/a", Some("web"));
        apply(&mut p, &mut RequestLog::default()).expect("same host");
        assert_eq!(p.uri.to_string(), "http://web/a");

        let mut p = parts("*", Some("web"));
        p.method = http::Method::OPTIONS;
        apply(&mut p, &mut RequestLog::default()).expect("asterisk-form");
        assert_eq!(p.uri.to_string(), "*");

        let mut p = parts("http://web/a", Some("evil"));
        let r = apply(&mut p, &mut RequestLog::default()).expect_err("two hosts");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}
