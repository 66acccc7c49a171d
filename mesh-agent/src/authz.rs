//! L4 authorization, Istio semantics, as a pure function: DENY policies first, then
//! ALLOW (if any ALLOW policy applies, one must match), AUDIT only marks.
use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    identity::Identity,
    model::{Action, AuthorizationPolicy, Operation, Source},
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

fn applies(p: &AuthorizationPolicy, t: Target<'_>) -> bool {
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
}

fn policy_matches(p: &AuthorizationPolicy, c: &Connection<'_>) -> bool {
    p.spec.rules.iter().any(|r| {
        (r.from.is_empty() || r.from.iter().any(|f| source_matches(&f.source, c)))
            && (r.to.is_empty() || r.to.iter().any(|t| operation_matches(&t.operation, c)))
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
