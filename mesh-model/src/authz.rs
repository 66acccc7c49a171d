//! Authorization, Istio semantics, as a pure function: DENY policies first, then
//! ALLOW (if any ALLOW policy applies, one must match), AUDIT only marks.
//!
//! One evaluator serves L4 and L7. Rules with L7 fields (methods, paths, hosts,
//! request principals, `when`) are judged per request by the waypoint. At L4:
//! - a connection from a mesh agent (HBONE, same node) was already judged per request
//!   by the source's waypoint, which every agent runs for destinations with L7 policy,
//!   so L7 rules do not apply there;
//! - any other connection cannot be judged at L7: ALLOW rules with L7 fields never
//!   match and DENY rules match on their L4 fields alone (fail closed), as ztunnel
//!   does without a waypoint.
use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    identity::Identity,
    model::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source},
};

/// Policies in this namespace apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "ferrymesh-system";

/// What the destination agent knows of a connection.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// None for plaintext (no peer certificate).
    pub source: Option<&'a Identity>,
    pub source_ip: IpAddr,
    pub destination_port: u16,
    pub l7: L7<'a>,
}

/// What is known above L4.
#[derive(Debug, Clone, Copy)]
pub enum L7<'a> {
    /// A request, judged at the waypoint.
    Request(&'a Request<'a>),
    /// L4 only, from a mesh agent whose waypoint judged the requests.
    JudgedAtSource,
    /// L4 only and nobody judged requests.
    None,
}

/// An HTTP request's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `iss/sub` of a validated JWT.
    pub principal: Option<&'a str>,
    pub claims: Option<&'a serde_json::Value>,
}

/// The destination workload.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by a DENY policy, or by no ALLOW policy matching (`policy` empty).
    Deny {
        policy: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

fn key(p: &AuthorizationPolicy) -> String {
    format!("{}/{}", p.metadata.namespace(), p.metadata.name)
}

pub fn applies(p: &AuthorizationPolicy, t: Target<'_>) -> bool {
    let ns = p.metadata.namespace();
    if ns != t.namespace && ns != ROOT_NAMESPACE {
        return false;
    }
    match &p.spec.selector {
        None => true,
        Some(sel) => sel
            .match_labels
            .iter()
            .all(|(k, v)| t.labels.get(k) == Some(v)),
    }
}

/// Istio string match: exact, `*`, `prefix*` or `*suffix`.
fn string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, len)) = parse_cidr(cidr) else {
        return false;
    };
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn source_matches(s: &Source, c: &Connection<'_>) -> bool {
    let principal = c.source.map(Identity::principal);
    let namespace = c.source.map(|i| i.namespace.as_str());
    let any = |patterns: &[String], value: Option<&str>| {
        value.is_some_and(|v| patterns.iter().any(|p| string_match(p, v)))
    };
    (s.principals.is_empty() || any(&s.principals, principal.as_deref()))
        && (s.not_principals.is_empty() || !any(&s.not_principals, principal.as_deref()))
        && (s.namespaces.is_empty() || any(&s.namespaces, namespace))
        && (s.not_namespaces.is_empty() || !any(&s.not_namespaces, namespace))
        && (s.ip_blocks.is_empty() || s.ip_blocks.iter().any(|b| in_cidr(c.source_ip, b)))
        && (s.not_ip_blocks.is_empty() || !s.not_ip_blocks.iter().any(|b| in_cidr(c.source_ip, b)))
}

fn operation_matches(o: &Operation, c: &Connection<'_>) -> bool {
    let port = c.destination_port.to_string();
    (o.ports.is_empty() || o.ports.contains(&port))
        && (o.not_ports.is_empty() || !o.not_ports.contains(&port))
        && match c.l7 {
            L7::Request(r) => {
                let any =
                    |patterns: &[String], v: &str| patterns.iter().any(|p| string_match(p, v));
                (o.methods.is_empty() || any(&o.methods, r.method))
                    && (o.not_methods.is_empty() || !any(&o.not_methods, r.method))
                    && (o.paths.is_empty() || any(&o.paths, r.path))
                    && (o.not_paths.is_empty() || !any(&o.not_paths, r.path))
                    && (o.hosts.is_empty() || any(&o.hosts, r.host))
            }
            _ => true,
        }
}

fn request_source_matches(s: &Source, r: &Request<'_>) -> bool {
    let any = |patterns: &[String]| {
        r.principal
            .is_some_and(|v| patterns.iter().any(|p| string_match(p, v)))
    };
    (s.request_principals.is_empty() || any(&s.request_principals))
        && (s.not_request_principals.is_empty() || !any(&s.not_request_principals))
}

/// The value(s) a `when` key names in a request.
fn condition_values(key: &str, c: &Connection<'_>, r: &Request<'_>) -> Vec<String> {
    if let Some(h) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return r
            .headers
            .get_all(h)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
    }
    if let Some(claim) = key
        .strip_prefix("request.auth.claims[")
        .and_then(|k| k.strip_suffix(']'))
    {
        // Nested claims are written claims[a][b].
        let mut v = r.claims;
        for part in claim.split("][") {
            v = v.and_then(|x| x.get(part));
        }
        return match v {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(other) => vec![other.to_string()],
        };
    }
    match key {
        "request.auth.principal" => r.principal.map(str::to_owned).into_iter().collect(),
        "source.principal" => c.source.map(Identity::principal).into_iter().collect(),
        "source.namespace" => c.source.map(|i| i.namespace.clone()).into_iter().collect(),
        "request.method" => vec![r.method.to_owned()],
        _ => Vec::new(),
    }
}

fn condition_matches(cond: &Condition, c: &Connection<'_>, r: &Request<'_>) -> bool {
    let values = condition_values(&cond.key, c, r);
    let hit = |patterns: &[String]| {
        values
            .iter()
            .any(|v| patterns.iter().any(|p| string_match(p, v)))
    };
    (cond.values.is_empty() || hit(&cond.values))
        && (cond.not_values.is_empty() || !hit(&cond.not_values))
}

/// The rule names attributes only a request has.
pub fn rule_has_l7(r: &Rule) -> bool {
    !r.when.is_empty()
        || r.from.iter().any(|f| {
            !f.source.request_principals.is_empty() || !f.source.not_request_principals.is_empty()
        })
        || r.to.iter().any(|t| {
            let o = &t.operation;
            !(o.methods.is_empty()
                && o.not_methods.is_empty()
                && o.paths.is_empty()
                && o.not_paths.is_empty()
                && o.hosts.is_empty())
        })
}

fn rule_matches(r: &Rule, c: &Connection<'_>) -> bool {
    (r.from.is_empty()
        || r.from.iter().any(|f| {
            source_matches(&f.source, c)
                && match c.l7 {
                    L7::Request(req) => request_source_matches(&f.source, req),
                    _ => true,
                }
        }))
        && (r.to.is_empty() || r.to.iter().any(|t| operation_matches(&t.operation, c)))
        && match c.l7 {
            L7::Request(req) => r.when.iter().all(|w| condition_matches(w, c, req)),
            _ => true,
        }
}

fn policy_matches(p: &AuthorizationPolicy, c: &Connection<'_>) -> bool {
    p.spec.rules.iter().any(|r| {
        let l7 = rule_has_l7(r);
        match (c.l7, p.spec.action) {
            // The waypoint judged the L7 parts: ALLOW rules count on their L4 parts,
            // DENY rules were applied per request.
            (L7::JudgedAtSource, Action::Deny | Action::Audit) if l7 => false,
            (L7::None, Action::Allow) if l7 => false,
            _ => rule_matches(r, c),
        }
    })
}

pub fn evaluate(
    policies: &[AuthorizationPolicy],
    target: Target<'_>,
    c: &Connection<'_>,
) -> Verdict {
    let applicable: Vec<&AuthorizationPolicy> =
        policies.iter().filter(|p| applies(p, target)).collect();
    let audited = applicable
        .iter()
        .filter(|p| p.spec.action == Action::Audit && policy_matches(p, c))
        .map(|p| key(p))
        .collect();
    if let Some(p) = applicable
        .iter()
        .find(|p| p.spec.action == Action::Deny && policy_matches(p, c))
    {
        return Verdict {
            decision: Decision::Deny { policy: key(p) },
            audited,
        };
    }
    let allows: Vec<&&AuthorizationPolicy> = applicable
        .iter()
        .filter(|p| p.spec.action == Action::Allow)
        .collect();
    let decision = if allows.is_empty() || allows.iter().any(|p| policy_matches(p, c)) {
        Decision::Allow
    } else {
        Decision::Deny {
            policy: String::new(),
        }
    };
    Verdict { decision, audited }
}

#[cfg(test)]
mod tests;
