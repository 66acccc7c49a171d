//! Gateway API filters on request and response heads. No I/O: table-tested.
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

use mesh_model::l7::table::PathCond;
use mesh_model::model::{
    HeaderModifier, PathModifier, PathModifierType, RequestRedirect, UrlRewrite,
};

pub fn modify_headers(h: &mut HeaderMap, m: &HeaderModifier) {
    for v in &m.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(v.name.as_bytes()),
            HeaderValue::from_str(&v.value),
        ) {
            h.insert(n, v);
        }
    }
    for v in &m.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(v.name.as_bytes()),
            HeaderValue::from_str(&v.value),
        ) {
            h.append(n, v);
        }
    }
    for n in &m.remove {
        if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
            h.remove(n);
        }
    }
}

/// The path after a path modifier; `matched` is the rule's match (for prefixes).
pub fn modify_path(path: &str, m: &PathModifier, matched: Option<&PathCond>) -> String {
    match m.kind {
        PathModifierType::ReplaceFullPath => {
            m.replace_full_path.clone().unwrap_or_else(|| "/".into())
        }
        PathModifierType::ReplacePrefixMatch => {
            let new = m.replace_prefix_match.as_deref().unwrap_or("/");
            let prefix = match matched {
                Some(PathCond::Prefix(p)) => p.as_str(),
                _ => "",
            };
            let rest = path.strip_prefix(prefix).unwrap_or(path);
            let new = new.trim_end_matches('/');
            match (new.is_empty(), rest.is_empty()) {
                (true, true) => "/".into(),
                (true, false) => rest.to_owned(),
                (false, _) => format!("{new}{rest}"),
            }
        }
    }
}

/// Rewrites the request target (path, keeping the query) and Host.
pub fn rewrite(
    uri: &Uri,
    headers: &mut HeaderMap,
    r: &UrlRewrite,
    matched: Option<&PathCond>,
) -> Option<Uri> {
    if let Some(host) = &r.hostname {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
    let m = r.path.as_ref()?;
    let path = modify_path(uri.path(), m, matched);
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

/// An authority's host and port (an IPv6 literal keeps its brackets).
pub fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// The status and Location of a redirect.
pub fn redirect(
    uri: &Uri,
    host: &str,
    r: &RequestRedirect,
    matched: Option<&PathCond>,
) -> (StatusCode, String) {
    let scheme = r.scheme.clone().unwrap_or_else(|| "http".into());
    let (orig_host, orig_port) = split_port(host);
    let hostname = r.hostname.clone().unwrap_or_else(|| orig_host.to_owned());
    let default_port = if scheme == "https" { 443 } else { 80 };
    // Gateway API: a given scheme without a port means that scheme's well-known port.
    let port = r.port.or(if r.scheme.is_some() { None } else { orig_port });
    let authority = match port {
        Some(p) if p != default_port => format!("{hostname}:{p}"),
        _ => hostname,
    };
    let path = match &r.path {
        Some(m) => modify_path(uri.path(), m, matched),
        None => uri.path().to_owned(),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let status = StatusCode::from_u16(r.status_code.unwrap_or(302)).unwrap_or(StatusCode::FOUND);
    (status, format!("{scheme}://{authority}{path}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathCond {
        PathCond::Prefix(p.into())
    }

    #[test]
    fn path_modifiers() {
        let full = |v: &str| PathModifier {
            kind: PathModifierType::ReplaceFullPath,
            replace_full_path: Some(v.into()),
            replace_prefix_match: None,
        };
        let pre = |v: &str| PathModifier {
            kind: PathModifierType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some(v.into()),
        };
        let cases = [
            ("full path", "/a/b", full("/x"), prefix("/a"), "/x"),
            (
                "prefix to other prefix",
                "/v1/users",
                pre("/v2"),
                prefix("/v1"),
                "/v2/users",
            ),
            (
                "prefix to root",
                "/api/users",
                pre("/"),
                prefix("/api"),
                "/users",
            ),
            (
                "prefix to root, exact",
                "/api",
                pre("/"),
                prefix("/api"),
                "/",
            ),
            (
                "prefix with trailing slash",
                "/api/x",
                pre("/new/"),
                prefix("/api"),
                "/new/x",
            ),
        ];
        for (name, path, m, matched, want) in cases {
            assert_eq!(modify_path(path, &m, Some(&matched)), want, "{name}");
        }
    }

    #[test]
    fn redirects() {
        let uri: Uri = "/old/page?x=1".parse().expect("uri");
        let cases = [
            (
                "scheme only",
                RequestRedirect {
                    scheme: Some("https".into()),
                    ..Default::default()
                },
                "web:8080",
                302,
                "https://web/old/page?x=1",
            ),
            (
                "host and 301",
                RequestRedirect {
                    hostname: Some("new.example".into()),
                    status_code: Some(301),
                    ..Default::default()
                },
                "web",
                301,
                "http://new.example/old/page?x=1",
            ),
            (
                "keeps port",
                RequestRedirect {
                    hostname: Some("h".into()),
                    ..Default::default()
                },
                "web:8080",
                302,
                "http://h:8080/old/page?x=1",
            ),
            (
                "explicit port",
                RequestRedirect {
                    port: Some(9000),
                    ..Default::default()
                },
                "web",
                302,
                "http://web:9000/old/page?x=1",
            ),
        ];
        for (name, r, host, status, location) in cases {
            let (s, l) = redirect(&uri, host, &r, Some(&prefix("/old")));
            assert_eq!((s.as_u16(), l.as_str()), (status, location), "{name}");
        }
    }

    #[test]
    fn header_modifier() {
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-remove", HeaderValue::from_static("1"));
        let m: HeaderModifier = serde_yaml::from_str(
            "set: [{name: x-set, value: new}]\nadd: [{name: x-keep, value: '2'}]\nremove: [x-remove]",
        )
        .expect("yaml");
        modify_headers(&mut h, &m);
        assert_eq!(h.get("x-set").map(|v| v.as_bytes()), Some(&b"new"[..]));
        assert_eq!(h.get_all("x-keep").iter().count(), 2);
        assert!(h.get("x-remove").is_none());
    }
}
