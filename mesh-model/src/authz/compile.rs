//! AuthorizationPolicy compiled once per config: string patterns, path templates,
//! CIDRs, ports, service accounts and `when` keys parsed, so that a decision never
//! parses anything. Istio's webhook checks run first (`validate`): what it would
//! refuse is refused here with its message.
use super::{
    keys::{Condition, ConditionKey, ServiceAccount, Values},
    patterns::{Cidr, Pattern},
};
use crate::model::{self, Action, AuthorizationPolicy, Labels};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub principals: Vec<Pattern>,
    pub not_principals: Vec<Pattern>,
    pub namespaces: Vec<Pattern>,
    pub not_namespaces: Vec<Pattern>,
    pub service_accounts: Vec<ServiceAccount>,
    pub not_service_accounts: Vec<ServiceAccount>,
    pub ip_blocks: Vec<Cidr>,
    pub not_ip_blocks: Vec<Cidr>,
    /// HTTP attributes (ztunnel's rule at L4).
    pub remote_ip_blocks: Vec<Cidr>,
    pub not_remote_ip_blocks: Vec<Cidr>,
    pub request_principals: Vec<Pattern>,
    pub not_request_principals: Vec<Pattern>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    /// HTTP attributes (ztunnel's rule at L4).
    pub methods: Vec<Pattern>,
    pub not_methods: Vec<Pattern>,
    pub paths: Vec<Pattern>,
    pub not_paths: Vec<Pattern>,
    pub hosts: Vec<Pattern>,
    pub not_hosts: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The HTTP attributes it names, by Istio's names (`methods`, `request.headers[x]`).
    /// Where only an L4 check decides, ztunnel's rule applies: an ALLOW (or AUDIT)
    /// rule with any matches nothing; a DENY rule matches on its other fields.
    pub http: Vec<String>,
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
    pub when: Vec<Condition>,
    /// Fields ferrymesh does not know (a future Istio's): an ALLOW or AUDIT rule
    /// with any matches nothing; a DENY rule matches on the rest.
    pub unsupported: Vec<String>,
}

impl Rule {
    pub fn l7(&self) -> bool {
        !self.http.is_empty()
    }
}

/// What a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every workload of its namespace (of the mesh, in the root namespace).
    Namespace,
    /// Workloads of its namespace whose labels hold these.
    Selector(Labels),
    /// `targetRefs`: Services (requests and connections addressed to them) and
    /// Gateways (their workloads) of its namespace.
    Targets(Vec<Target>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Service(String),
    Gateway(String),
}

/// One AuthorizationPolicy, ready to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name`, as logs and metrics name it.
    pub name: String,
    pub namespace: String,
    pub action: Action,
    pub scope: Scope,
    /// In the mesh's root namespace: its scope reaches every namespace (a
    /// selector still restricts it), as Istio's reference says.
    pub mesh_wide: bool,
    /// `istio.io/dry-run`: evaluated, logged and counted, never enforced.
    pub dry_run: bool,
    pub rules: Vec<Rule>,
    /// What was not understood and how it is enforced instead (logged, counted).
    pub degraded: Vec<String>,
}

impl Policy {
    /// Some rule needs a request to be judged.
    pub fn has_l7(&self) -> bool {
        self.rules.iter().any(Rule::l7)
    }
}

fn patterns(v: &[String]) -> Vec<Pattern> {
    v.iter().map(|p| Pattern::new(p)).collect()
}

fn cidrs(v: &[String]) -> Vec<Cidr> {
    v.iter().filter_map(|s| Cidr::parse(s)).collect()
}

fn ports(v: &[String]) -> Vec<u16> {
    v.iter().filter_map(|p| p.parse().ok()).collect()
}

fn accounts(v: &[String], ns: &str) -> Vec<ServiceAccount> {
    v.iter().map(|s| ServiceAccount::parse(s, ns)).collect()
}

fn source(s: &model::Source, ns: &str, http: &mut Vec<String>) -> Source {
    for (name, v) in [
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ] {
        if !v.is_empty() {
            http.push(name.to_owned());
        }
    }
    Source {
        principals: patterns(&s.principals),
        not_principals: patterns(&s.not_principals),
        namespaces: patterns(&s.namespaces),
        not_namespaces: patterns(&s.not_namespaces),
        service_accounts: accounts(&s.service_accounts, ns),
        not_service_accounts: accounts(&s.not_service_accounts, ns),
        ip_blocks: cidrs(&s.ip_blocks),
        not_ip_blocks: cidrs(&s.not_ip_blocks),
        remote_ip_blocks: cidrs(&s.remote_ip_blocks),
        not_remote_ip_blocks: cidrs(&s.not_remote_ip_blocks),
        request_principals: patterns(&s.request_principals),
        not_request_principals: patterns(&s.not_request_principals),
    }
}

/// Hosts match case-insensitively (the waypoint lower-cases the request's).
fn host_patterns(v: &[String]) -> Vec<Pattern> {
    v.iter()
        .map(|h| Pattern::new(&h.to_ascii_lowercase()))
        .collect()
}

fn operation(o: &model::Operation, http: &mut Vec<String>) -> Operation {
    for (name, v) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        if !v.is_empty() {
            http.push(name.to_owned());
        }
    }
    Operation {
        ports: ports(&o.ports),
        not_ports: ports(&o.not_ports),
        methods: patterns(&o.methods),
        not_methods: patterns(&o.not_methods),
        paths: o.paths.iter().map(|p| Pattern::path(p)).collect(),
        not_paths: o.not_paths.iter().map(|p| Pattern::path(p)).collect(),
        hosts: host_patterns(&o.hosts),
        not_hosts: host_patterns(&o.not_hosts),
    }
}

/// The fields of a rule ferrymesh does not know, by path.
fn unknown(r: &model::Rule, i: usize) -> Vec<String> {
    let at = format!("spec.rules[{i}]");
    let mut out: Vec<String> = r.unknown.keys().map(|k| format!("{at}.{k}")).collect();
    for (j, f) in r.from.iter().enumerate() {
        let field = format!("{at}.from[{j}].source");
        out.extend(f.source.unknown.keys().map(|k| format!("{field}.{k}")));
    }
    for (j, t) in r.to.iter().enumerate() {
        let field = format!("{at}.to[{j}].operation");
        out.extend(t.operation.unknown.keys().map(|k| format!("{field}.{k}")));
    }
    out
}

fn rule(r: &model::Rule, i: usize, ns: &str) -> Result<Rule, String> {
    let mut http = Vec::new();
    let from = r
        .from
        .iter()
        .map(|f| source(&f.source, ns, &mut http))
        .collect();
    let to =
        r.to.iter()
            .map(|t| operation(&t.operation, &mut http))
            .collect();
    let when = r
        .when
        .iter()
        .map(|c| {
            let key = ConditionKey::parse(&c.key)?;
            if !key.l4() {
                http.push(c.key.clone());
            }
            Ok(Condition {
                values: Values::new(&key, &c.values, ns),
                not_values: Values::new(&key, &c.not_values, ns),
                key,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    http.sort();
    http.dedup();
    Ok(Rule {
        http,
        from,
        to,
        when,
        unsupported: unknown(r, i),
    })
}

fn scope(p: &AuthorizationPolicy) -> Scope {
    let refs = p.spec.target_refs.iter().chain(p.spec.target_ref.as_ref());
    let targets: Vec<Target> = refs
        .filter_map(|r| match (r.group.as_str(), r.kind.as_str()) {
            ("" | "core", "Service") => Some(Target::Service(r.name.clone())),
            ("gateway.networking.k8s.io", "Gateway") => Some(Target::Gateway(r.name.clone())),
            _ => None,
        })
        .collect();
    if !targets.is_empty() {
        return Scope::Targets(targets);
    }
    match &p.spec.selector {
        // Istio: a selector without labels selects every workload of the namespace.
        Some(s) if !s.match_labels.is_empty() => Scope::Selector(s.match_labels.clone()),
        _ => Scope::Namespace,
    }
}

/// Compiles one policy, after Istio's webhook checks; Err is the message naming
/// the bad field. `root` is the mesh's root namespace.
pub fn policy(p: &AuthorizationPolicy, root: &str) -> Result<Policy, String> {
    super::validate::policy(p)?;
    let ns = p.metadata.namespace();
    let mut rules = p
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, i, ns))
        .collect::<Result<Vec<_>, _>>()?;
    // A field of the spec itself bears on every rule.
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
            degraded.push(format!("{u} is not known: {how}"));
        }
    }
    let scope = scope(p);
    Ok(Policy {
        name: format!("{ns}/{}", p.metadata.name),
        namespace: ns.to_owned(),
        action,
        mesh_wide: ns == root && !matches!(scope, Scope::Targets(_)),
        scope,
        dry_run: p.metadata.dry_run(),
        rules,
        degraded,
    })
}
