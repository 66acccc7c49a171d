//! Which route rule serves a request. No I/O: table-tested.
use http::HeaderMap;

use mesh_model::l7::table::{Cond, Entry, Match, PathCond, Protocol};

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub grpc: bool,
    /// The parent's port the request came to.
    pub port: u16,
    /// The caller's namespace (None: unknown, e.g. at the edge): consumer routes
    /// apply to their own namespace's callers only.
    pub namespace: Option<&'a str>,
    /// The request's host, lower case, port included or not.
    pub host: &'a str,
}

/// Whether a route's hostnames admit the request's authority (any when it has
/// none): exact, or `*.suffix` for one or more labels before the suffix.
pub fn host_matches(hostnames: &[String], authority: &str) -> bool {
    admits(hostnames, bare_host(authority))
}

/// The host to match hostnames against: no port, no trailing dot.
fn bare_host(authority: &str) -> &str {
    let host = super::filters::split_port(authority).0;
    host.strip_suffix('.').unwrap_or(host)
}

fn admits(hostnames: &[String], host: &str) -> bool {
    hostnames.is_empty()
        || hostnames.iter().any(|h| match h.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => h == host,
        })
}

fn path_matches(c: &PathCond, path: &str) -> bool {
    match c {
        PathCond::Exact(p) => p == path,
        PathCond::Prefix(p) => {
            // Whole segments: "/foo" matches "/foo", "/foo/" and "/foo/bar", not "/foobar".
            p.is_empty()
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
        PathCond::Regex(r) => r.is_match(path),
    }
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// `/package.Service/Method` of a gRPC request.
pub fn grpc_parts(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

pub fn matches(m: &Match, r: &RequestView<'_>) -> bool {
    if let Some(p) = &m.path {
        if !path_matches(p, r.path) {
            return false;
        }
    }
    if let Some(method) = &m.method {
        if method != r.method {
            return false;
        }
    }
    if m.grpc_service.is_some() || m.grpc_method.is_some() {
        let Some((service, method)) = grpc_parts(r.path) else {
            return false;
        };
        if !m.grpc_service.as_ref().is_none_or(|c| c.matches(service))
            || !m.grpc_method.as_ref().is_none_or(|c| c.matches(method))
        {
            return false;
        }
    }
    let header_ok = |(name, cond): &(http::HeaderName, Cond)| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| cond.matches(v))
    };
    let query_ok =
        |(name, cond): &(String, Cond)| query_value(r.query, name).is_some_and(|v| cond.matches(v));
    m.headers.iter().all(header_ok) && m.query.iter().all(query_ok)
}

/// The best rule for a request among a parent's entries (sorted best first). gRPC
/// requests try GRPCRoutes before HTTPRoutes; other requests only HTTPRoutes.
/// The entries that apply to callers in `namespace` on `port`: that namespace's
/// consumer routes if it has any (GAMMA: they replace the producer's for it),
/// else the producer routes.
pub fn applicable<'e>(
    entries: &'e [Entry],
    namespace: Option<&str>,
    port: u16,
) -> impl Iterator<Item = &'e Entry> + 'e {
    let on_port = move |e: &&Entry| e.port.is_none_or(|p| p == port);
    let ns = namespace.map(str::to_owned);
    let consumer = entries
        .iter()
        .filter(on_port)
        .any(|e| e.consumer.is_some() && e.consumer == ns);
    entries.iter().filter(on_port).filter(move |e| {
        if consumer {
            e.consumer == ns
        } else {
            e.consumer.is_none()
        }
    })
}

pub fn select<'e>(entries: &'e [Entry], r: &RequestView<'_>) -> Option<&'e Entry> {
    let protocols: &[Protocol] = if r.grpc {
        &[Protocol::Grpc, Protocol::Http]
    } else {
        &[Protocol::Http]
    };
    let host = bare_host(r.host);
    protocols.iter().find_map(|proto| {
        applicable(entries, r.namespace, r.port)
            .filter(|e| e.protocol == *proto)
            .find(|e| admits(&e.rule.hostnames, host) && matches(&e.m, r))
    })
}

#[cfg(test)]
mod tests;
