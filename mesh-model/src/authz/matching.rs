//! Whether a compiled rule matches a connection or request (Istio semantics). L4
//! fields and L4 `when` keys are judged everywhere; HTTP attributes only with a
//! request (`policy` says what a rule with them does without one).
use std::net::IpAddr;

use super::{
    compile::{Operation, Policy, Rule, Source},
    keys::{Condition, ConditionKey, ServiceAccount, Values},
    patterns::{Cidr, Pattern},
    types::{Connection, L7},
};
use crate::model::Action;

fn any(patterns: &[Pattern], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

/// Empty means "any"; `not` forms must not match.
fn included(yes: &[Pattern], no: &[Pattern], value: Option<&str>) -> bool {
    (yes.is_empty() || any(yes, value)) && (no.is_empty() || !any(no, value))
}

fn in_blocks(yes: &[Cidr], no: &[Cidr], ip: IpAddr) -> bool {
    (yes.is_empty() || yes.iter().any(|b| b.contains(ip)))
        && (no.is_empty() || !no.iter().any(|b| b.contains(ip)))
}

fn account_is(a: &ServiceAccount, c: &Connection<'_>) -> bool {
    c.source
        .is_some_and(|i| i.namespace == a.namespace && i.service_account == a.name)
}

fn accounts(yes: &[ServiceAccount], no: &[ServiceAccount], c: &Connection<'_>) -> bool {
    (yes.is_empty() || yes.iter().any(|a| account_is(a, c)))
        && (no.is_empty() || !no.iter().any(|a| account_is(a, c)))
}

fn source_matches(s: &Source, c: &Connection<'_>) -> bool {
    let principal = c.source.map(|i| i.principal());
    let namespace = c.source.map(|i| i.namespace.as_str());
    let l4 = included(&s.principals, &s.not_principals, principal.as_deref())
        && included(&s.namespaces, &s.not_namespaces, namespace)
        && accounts(&s.service_accounts, &s.not_service_accounts, c)
        && in_blocks(&s.ip_blocks, &s.not_ip_blocks, c.source_ip);
    l4 && match c.l7 {
        L7::Request(r) => {
            included(
                &s.request_principals,
                &s.not_request_principals,
                r.principal,
            ) && in_blocks(&s.remote_ip_blocks, &s.not_remote_ip_blocks, r.remote_ip)
        }
        _ => true,
    }
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
/// Istio's (it generates `host` and `host:*` for Envoy); case-insensitively.
fn host_matches(patterns: &[Pattern], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let bare = without_port(&host);
    patterns.iter().any(|p| p.matches(&host) || p.matches(bare))
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

/// A `when` key's value in a connection or request.
enum Attr<'a> {
    Ip(IpAddr),
    Port(u16),
    Connection(&'a Connection<'a>),
    Strings(Vec<String>),
}

fn claim(claims: Option<&serde_json::Value>, path: &[String]) -> Vec<String> {
    let mut v = claims;
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

/// None: an HTTP attribute asked of a connection without a request.
fn attribute<'a>(key: &ConditionKey, c: &'a Connection<'a>) -> Option<Attr<'a>> {
    let strings = |v: Option<String>| Some(Attr::Strings(v.into_iter().collect()));
    match key {
        ConditionKey::SourceIp => return Some(Attr::Ip(c.source_ip)),
        ConditionKey::DestinationIp => return Some(Attr::Ip(c.destination_ip)),
        ConditionKey::DestinationPort => return Some(Attr::Port(c.destination_port)),
        ConditionKey::SourcePrincipal => return strings(c.source.map(|i| i.principal())),
        ConditionKey::SourceNamespace => return strings(c.source.map(|i| i.namespace.clone())),
        ConditionKey::SourceServiceAccount => return Some(Attr::Connection(c)),
        _ => {}
    }
    let L7::Request(r) = c.l7 else { return None };
    Some(match key {
        ConditionKey::RemoteIp => Attr::Ip(r.remote_ip),
        ConditionKey::Header(h) => Attr::Strings(
            r.headers
                .get_all(h.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect(),
        ),
        ConditionKey::Claim(path) => Attr::Strings(claim(r.claims, path)),
        ConditionKey::RequestPrincipal => {
            Attr::Strings(r.principal.map(str::to_owned).into_iter().collect())
        }
        ConditionKey::RequestAudiences => Attr::Strings(claim(r.claims, &["aud".to_owned()])),
        ConditionKey::RequestPresenter => Attr::Strings(claim(r.claims, &["azp".to_owned()])),
        // No value here: a rule on them matches only through `notValues`.
        _ => Attr::Strings(Vec::new()),
    })
}

fn hit(values: &Values, attr: &Attr<'_>) -> bool {
    match (values, attr) {
        (Values::Cidrs(v), Attr::Ip(ip)) => v.iter().any(|b| b.contains(*ip)),
        (Values::Ports(v), Attr::Port(p)) => v.contains(p),
        (Values::Accounts(v), Attr::Connection(c)) => v.iter().any(|a| account_is(a, c)),
        (Values::Strings(v), Attr::Strings(s)) => s.iter().any(|x| v.iter().any(|p| p.matches(x))),
        _ => false,
    }
}

/// True also when the key is an HTTP attribute and there is no request: the
/// caller (`policy`) decides what such a rule does at L4.
fn condition_matches(cond: &Condition, c: &Connection<'_>) -> bool {
    let Some(attr) = attribute(&cond.key, c) else {
        return true;
    };
    (cond.values.is_empty() || hit(&cond.values, &attr))
        && (cond.not_values.is_empty() || !hit(&cond.not_values, &attr))
}

fn rule_matches(r: &Rule, c: &Connection<'_>) -> bool {
    (r.from.is_empty() || r.from.iter().any(|f| source_matches(f, c)))
        && (r.to.is_empty() || r.to.iter().any(|t| operation_matches(t, c)))
        && r.when.iter().all(|w| condition_matches(w, c))
}

pub(super) fn policy(p: &Policy, c: &Connection<'_>) -> bool {
    p.rules.iter().any(|r| match (c.l7, p.action) {
        // What cannot be understood never widens access.
        (_, Action::Allow | Action::Audit) if !r.unsupported.is_empty() => false,
        // The requests will be judged one by one: an ALLOW rule counts on its L4
        // fields now, DENY and AUDIT rules with HTTP attributes wait for them.
        (L7::PerRequest, Action::Deny | Action::Audit) if r.l7() => false,
        // ztunnel: "L7 policies never match for ALLOW"; DENY keeps its L4 part.
        (L7::None, Action::Allow | Action::Audit) if r.l7() => false,
        _ => rule_matches(r, c),
    })
}
