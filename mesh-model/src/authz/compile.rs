//! AuthorizationPolicy compiled once per config: string patterns, CIDRs, ports and
//! `when` keys parsed, so that a decision never parses anything.
use std::net::IpAddr;

use crate::model::{self, Action, AuthorizationPolicy, Labels};

/// Istio string match: exact, `*`, `prefix*` or `*suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    fn new(p: &str) -> Pattern {
        if p == "*" {
            Pattern::Any
        } else if let Some(prefix) = p.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else if let Some(suffix) = p.strip_prefix('*') {
            Pattern::Suffix(suffix.to_owned())
        } else {
            Pattern::Exact(p.to_owned())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == v,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(s) => v.ends_with(s.as_str()),
        }
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or one address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (net, len) = match s.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip = s.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let len = u32::from(self.len);
        match (ip.to_canonical(), self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

/// What a `when` condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    Header(String),
    /// `request.auth.claims[a][b]`: the path into the claims.
    Claim(Vec<String>),
    RequestPrincipal,
    SourcePrincipal,
    SourceNamespace,
    Method,
    /// A key this version does not know: it yields no value.
    Unknown(String),
}

impl ConditionKey {
    fn new(key: &str) -> ConditionKey {
        let inner = |prefix: &str| key.strip_prefix(prefix).and_then(|k| k.strip_suffix(']'));
        if let Some(h) = inner("request.headers[") {
            return ConditionKey::Header(h.to_ascii_lowercase());
        }
        if let Some(c) = inner("request.auth.claims[") {
            return ConditionKey::Claim(c.split("][").map(str::to_owned).collect());
        }
        match key {
            "request.auth.principal" => ConditionKey::RequestPrincipal,
            "source.principal" => ConditionKey::SourcePrincipal,
            "source.namespace" => ConditionKey::SourceNamespace,
            "request.method" => ConditionKey::Method,
            other => ConditionKey::Unknown(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: ConditionKey,
    pub values: Vec<Pattern>,
    pub not_values: Vec<Pattern>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub principals: Vec<Pattern>,
    pub not_principals: Vec<Pattern>,
    pub namespaces: Vec<Pattern>,
    pub not_namespaces: Vec<Pattern>,
    pub ip_blocks: Vec<Cidr>,
    pub not_ip_blocks: Vec<Cidr>,
    pub request_principals: Vec<Pattern>,
    pub not_request_principals: Vec<Pattern>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    pub methods: Vec<Pattern>,
    pub not_methods: Vec<Pattern>,
    pub paths: Vec<Pattern>,
    pub not_paths: Vec<Pattern>,
    pub hosts: Vec<Pattern>,
    pub not_hosts: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule names attributes only a request has.
    pub l7: bool,
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
    pub when: Vec<Condition>,
    /// Fields of the rule ferrymesh cannot judge (unknown or unsupported). An ALLOW
    /// or AUDIT rule with any matches nothing; a DENY rule matches on the rest.
    pub unsupported: Vec<String>,
}

/// One AuthorizationPolicy, ready to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name`, as logs and metrics name it.
    pub name: String,
    pub namespace: String,
    pub action: Action,
    /// None: every workload of the namespace (or of the mesh, in the root namespace).
    pub selector: Option<Labels>,
    pub rules: Vec<Rule>,
    /// What was not understood and how it is enforced instead (logged, counted).
    pub degraded: Vec<String>,
}

impl Policy {
    /// Some rule needs a request to be judged.
    pub fn has_l7(&self) -> bool {
        self.rules.iter().any(|r| r.l7)
    }
}

fn patterns(v: &[String]) -> Vec<Pattern> {
    v.iter().map(|p| Pattern::new(p)).collect()
}

/// A list field whose every entry parses; else the field is left out (a DENY rule
/// then matches as if it were absent, as widely as possible) and noted as
/// unsupported (an ALLOW rule with it matches nothing).
fn all_or_none<T>(
    v: &[String],
    field: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
    unsupported: &mut Vec<String>,
) -> Vec<T> {
    let parsed: Option<Vec<T>> = v.iter().map(|s| parse(s)).collect();
    parsed.unwrap_or_else(|| {
        let bad: Vec<&String> = v.iter().filter(|s| parse(s).is_none()).collect();
        unsupported.push(format!("{field} ({bad:?} not {what})"));
        Vec::new()
    })
}

fn cidrs(v: &[String], field: &str, unsupported: &mut Vec<String>) -> Vec<Cidr> {
    all_or_none(v, field, "an address or CIDR", Cidr::parse, unsupported)
}

fn ports(v: &[String], field: &str, unsupported: &mut Vec<String>) -> Vec<u16> {
    all_or_none(v, field, "a port number", |p| p.parse().ok(), unsupported)
}

fn source(s: &model::Source, field: &str, unsupported: &mut Vec<String>) -> Result<Source, String> {
    Ok(Source {
        principals: patterns(&s.principals),
        not_principals: patterns(&s.not_principals),
        namespaces: patterns(&s.namespaces),
        not_namespaces: patterns(&s.not_namespaces),
        ip_blocks: cidrs(&s.ip_blocks, &format!("{field}.ipBlocks"), unsupported),
        not_ip_blocks: cidrs(
            &s.not_ip_blocks,
            &format!("{field}.notIpBlocks"),
            unsupported,
        ),
        request_principals: patterns(&s.request_principals),
        not_request_principals: patterns(&s.not_request_principals),
    })
}

fn operation(
    o: &model::Operation,
    field: &str,
    unsupported: &mut Vec<String>,
) -> Result<Operation, String> {
    Ok(Operation {
        ports: ports(&o.ports, &format!("{field}.ports"), unsupported),
        not_ports: ports(&o.not_ports, &format!("{field}.notPorts"), unsupported),
        methods: patterns(&o.methods),
        not_methods: patterns(&o.not_methods),
        paths: patterns(&o.paths),
        not_paths: patterns(&o.not_paths),
        // Hosts match case-insensitively (the waypoint lower-cases the request's).
        hosts: host_patterns(&o.hosts),
        not_hosts: host_patterns(&o.not_hosts),
    })
}

fn host_patterns(v: &[String]) -> Vec<Pattern> {
    v.iter()
        .map(|h| Pattern::new(&h.to_ascii_lowercase()))
        .collect()
}

/// The fields of a rule ferrymesh cannot judge, by path.
fn unsupported(r: &model::Rule, i: usize) -> Vec<String> {
    let at = format!("spec.rules[{i}]");
    let mut out: Vec<String> = r.unknown.keys().map(|k| format!("{at}.{k}")).collect();
    for (j, f) in r.from.iter().enumerate() {
        let s = &f.source;
        let field = format!("{at}.from[{j}].source");
        out.extend(s.unknown.keys().map(|k| format!("{field}.{k}")));
        for (name, v) in [
            ("remoteIpBlocks", &s.remote_ip_blocks),
            ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ("serviceAccounts", &s.service_accounts),
            ("notServiceAccounts", &s.not_service_accounts),
        ] {
            if !v.is_empty() {
                out.push(format!("{field}.{name}"));
            }
        }
    }
    for (j, t) in r.to.iter().enumerate() {
        let field = format!("{at}.to[{j}].operation");
        out.extend(t.operation.unknown.keys().map(|k| format!("{field}.{k}")));
    }
    for (j, c) in r.when.iter().enumerate() {
        if let ConditionKey::Unknown(k) = ConditionKey::new(&c.key) {
            out.push(format!("{at}.when[{j}].key {k}"));
        }
    }
    out
}

fn rule(r: &model::Rule, i: usize) -> Result<Rule, String> {
    let mut bad = unsupported(r, i);
    let from = r
        .from
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let field = format!("spec.rules[{i}].from[{j}].source");
            source(&f.source, &field, &mut bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let to =
        r.to.iter()
            .enumerate()
            .map(|(j, t)| {
                let field = format!("spec.rules[{i}].to[{j}].operation");
                operation(&t.operation, &field, &mut bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
    let when = r
        .when
        .iter()
        .map(|c| Condition {
            key: ConditionKey::new(&c.key),
            values: patterns(&c.values),
            not_values: patterns(&c.not_values),
        })
        .collect();
    Ok(Rule {
        l7: rule_has_l7(r),
        from,
        to,
        when,
        unsupported: bad,
    })
}

/// Compiles one policy; Err is the message naming the bad field.
pub fn policy(p: &AuthorizationPolicy) -> Result<Policy, String> {
    let mut rules = p
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, i))
        .collect::<Result<Vec<_>, _>>()?;
    // A field of the spec itself (targetRefs, ...) bears on every rule.
    let spec_unknown: Vec<String> = p.spec.unknown.keys().map(|k| format!("spec.{k}")).collect();
    for r in &mut rules {
        r.unsupported.extend(spec_unknown.iter().cloned());
    }
    let mut degraded = Vec::new();
    let action = match p.spec.action {
        Action::Custom => {
            degraded.push("action CUSTOM (external authorization) is not supported: enforced as DENY for what its rules match".to_owned());
            Action::Deny
        }
        a => a,
    };
    let how = match action {
        Action::Deny => "ignored (the rule denies on its other fields)",
        _ => "the rule matches nothing",
    };
    for r in &rules {
        for u in &r.unsupported {
            degraded.push(format!("{u} is not supported: {how}"));
        }
    }
    Ok(Policy {
        name: format!("{}/{}", p.metadata.namespace(), p.metadata.name),
        namespace: p.metadata.namespace().to_owned(),
        action,
        selector: p.spec.selector.as_ref().map(|s| s.match_labels.clone()),
        rules,
        degraded,
    })
}

/// The rule names attributes only a request has.
pub fn rule_has_l7(r: &crate::model::Rule) -> bool {
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
                && o.hosts.is_empty()
                && o.not_hosts.is_empty())
        })
}
