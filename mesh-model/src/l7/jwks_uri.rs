//! `jwksUri`: JWKS fetched over HTTPS by each agent (`mesh-agent/src/jwks_fetch.rs`)
//! and kept here, where compiling a RequestAuthentication finds them. Until a URI
//! has been fetched (or when its fetch fails) its rule refuses every token: fail
//! closed, never open.
use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
};

use crate::model::Objects;

fn cache() -> &'static RwLock<HashMap<String, String>> {
    static C: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();
    C.get_or_init(RwLock::default)
}

/// The JWKS fetched from `uri`, if any.
pub fn get(uri: &str) -> Option<String> {
    cache()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(uri)
        .cloned()
}

/// Stores what `uri` answered; true when it changed.
pub fn put(uri: &str, jwks: String) -> bool {
    let mut c = cache().write().unwrap_or_else(|p| p.into_inner());
    c.insert(uri.to_owned(), jwks.clone()) != Some(jwks)
}

/// Every jwksUri the objects name.
pub fn uris(o: &Objects) -> Vec<String> {
    let mut v: Vec<String> = o
        .request_authentications
        .iter()
        .flat_map(|ra| ra.spec.jwt_rules.iter())
        .filter_map(|r| r.jwks_uri.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `https://host[:port]/path` as (host, port, path); anything else is refused.
pub fn parse(uri: &str) -> Option<(String, u16, String)> {
    let rest = uri.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // `[v6]` or `[v6]:port`; `host` or `host:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']')?;
            match rest.strip_prefix(':') {
                Some(p) => (h, p.parse().ok()?),
                None if rest.is_empty() => (h, 443),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, 443),
        },
    };
    Some((host.to_owned(), port, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_uris_are_fetched() {
        assert_eq!(
            parse("https://keys.example:8443/jwks.json"),
            Some(("keys.example".into(), 8443, "/jwks.json".into()))
        );
        assert_eq!(
            parse("https://198.19.1.12/x"),
            Some(("198.19.1.12".into(), 443, "/x".into()))
        );
        assert_eq!(
            parse("https://[2001:db8::1]/k"),
            Some(("2001:db8::1".into(), 443, "/k".into()))
        );
        assert_eq!(
            parse("https://[2001:db8::1]:8443/k"),
            Some(("2001:db8::1".into(), 8443, "/k".into()))
        );
        for bad in [
            "http://keys.example/",
            "file:///etc/passwd",
            "https://",
            "https://u@h/",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(put("https://a/", "x".into()));
        assert!(!put("https://a/", "x".into()), "unchanged");
        assert_eq!(get("https://a/").as_deref(), Some("x"));
    }
}
