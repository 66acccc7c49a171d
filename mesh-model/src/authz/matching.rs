//! Whether a compiled rule matches a connection or request (Istio semantics).
use super::{
    compile::{Condition, ConditionKey, Operation, Pattern, Policy, Rule, Source},
    types::{Connection, Request, L7},
};
use crate::model::Action;

fn any(patterns: &[Pattern], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

/// Empty means "any"; `not` forms must not match.
fn included(yes: &[Pattern], no: &[Pattern], value: Option<&str>) -> bool {
    (yes.is_empty() || any(yes, value)) && (no.is_empty() || !any(no, value))
}

fn source_matches(s: &Source, c: &Connection<'_>) -> bool {
    let principal = c.source.map(|i| i.principal());
    let namespace = c.source.map(|i| i.namespace.as_str());
    let ip = c.source_ip;
    included(&s.principals, &s.not_principals, principal.as_deref())
        && included(&s.namespaces, &s.not_namespaces, namespace)
        && (s.ip_blocks.is_empty() || s.ip_blocks.iter().any(|b| b.contains(ip)))
        && (s.not_ip_blocks.is_empty() || !s.not_ip_blocks.iter().any(|b| b.contains(ip)))
}

fn request_source_matches(s: &Source, r: &Request<'_>) -> bool {
    included(
        &s.request_principals,
        &s.not_request_principals,
        r.principal,
    )
}

fn operation_matches(o: &Operation, c: &Connection<'_>) -> bool {
    let port = c.destination_port;
    (o.ports.is_empty() || o.ports.contains(&port))
        && (o.not_ports.is_empty() || !o.not_ports.contains(&port))
        && match c.l7 {
            L7::Request(r) => {
                included(&o.methods, &o.not_methods, Some(r.method))
                    && included(&o.paths, &o.not_paths, Some(r.path))
                    && (o.hosts.is_empty() || host_matches(&o.hosts, r.host))
                    && (o.not_hosts.is_empty() || !host_matches(&o.not_hosts, r.host))
            }
            _ => true,
        }
}

/// A host pattern without a port matches the request's host with any port, as
/// Istio's (it generates `host` and `host:*` for Envoy).
fn host_matches(patterns: &[Pattern], host: &str) -> bool {
    let bare = without_port(host);
    patterns.iter().any(|p| p.matches(host) || p.matches(bare))
}

/// `web:8080` -> `web`, `[2001:db8::1]:80` -> `[2001:db8::1]`; else unchanged.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The value(s) a `when` key names in a request.
fn condition_values(key: &ConditionKey, c: &Connection<'_>, r: &Request<'_>) -> Vec<String> {
    match key {
        ConditionKey::Header(h) => r
            .headers
            .get_all(h.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect(),
        ConditionKey::Claim(path) => {
            let mut v = r.claims;
            for part in path {
                v = v.and_then(|x| x.get(part));
            }
            match v {
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(other) => vec![other.to_string()],
            }
        }
        ConditionKey::RequestPrincipal => r.principal.map(str::to_owned).into_iter().collect(),
        ConditionKey::SourcePrincipal => c.source.map(|i| i.principal()).into_iter().collect(),
        ConditionKey::SourceNamespace => {
            c.source.map(|i| i.namespace.clone()).into_iter().collect()
        }
        ConditionKey::Method => vec![r.method.to_owned()],
        ConditionKey::Unknown(_) => Vec::new(),
    }
}

fn condition_matches(cond: &Condition, c: &Connection<'_>, r: &Request<'_>) -> bool {
    let values = condition_values(&cond.key, c, r);
    let hit = |patterns: &[Pattern]| values.iter().any(|v| patterns.iter().any(|p| p.matches(v)));
    (cond.values.is_empty() || hit(&cond.values))
        && (cond.not_values.is_empty() || !hit(&cond.not_values))
}

fn rule_matches(r: &Rule, c: &Connection<'_>) -> bool {
    (r.from.is_empty()
        || r.from.iter().any(|f| {
            source_matches(f, c)
                && match c.l7 {
                    L7::Request(req) => request_source_matches(f, req),
                    _ => true,
                }
        }))
        && (r.to.is_empty() || r.to.iter().any(|t| operation_matches(t, c)))
        && match c.l7 {
            // An unknown key cannot be judged: left out (a DENY rule then denies on
            // the rest; an ALLOW rule with one never gets here).
            L7::Request(req) => r
                .when
                .iter()
                .filter(|w| !matches!(w.key, ConditionKey::Unknown(_)))
                .all(|w| condition_matches(w, c, req)),
            _ => true,
        }
}

pub(super) fn policy(p: &Policy, c: &Connection<'_>) -> bool {
    p.rules.iter().any(|r| match (c.l7, p.action) {
        // What cannot be understood never widens access.
        (_, Action::Allow | Action::Audit) if !r.unsupported.is_empty() => false,
        // The waypoint judged the L7 parts: ALLOW rules count on their L4 parts,
        // DENY rules were applied per request.
        (L7::JudgedAtSource, Action::Deny | Action::Audit) if r.l7 => false,
        (L7::None, Action::Allow) if r.l7 => false,
        _ => rule_matches(r, c),
    })
}
