//! Istio's admission checks for AuthorizationPolicy and PeerAuthentication, with
//! its messages: what Istio's webhook would refuse is refused here (in files: the
//! config is refused; in a cluster, where no webhook ran, mesh-control replaces the
//! object by its fail-closed stand-in and reports it).
use crate::model::{self, Action, AuthorizationPolicy, LabelSelector, PeerAuthentication};

use super::{keys::ConditionKey, patterns::Cidr};

/// A port as Go's `strconv.ParseUint(s, 10, 32)` and `<= 65535` read it.
pub fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().and_then(|p| u16::try_from(p).ok())
}

fn ips(v: &[String], errs: &mut Vec<String>) {
    for s in v {
        let ok = Cidr::parse(s).is_some();
        match (ok, s.contains('/')) {
            (true, _) => {}
            (false, true) => errs.push(format!("bad CIDR range ({s})")),
            (false, false) => errs.push(format!("bad IP address ({s})")),
        }
    }
}

fn ports(v: &[String], errs: &mut Vec<String>) {
    for s in v.iter().filter(|s| port(s).is_none()) {
        errs.push(format!("bad port ({s})"));
    }
}

fn non_empty(name: &str, v: &[String], errs: &mut Vec<String>) {
    if v.iter().any(String::is_empty) {
        errs.push(format!("empty value not allowed, found in {name}"));
    }
}

fn service_accounts(name: &str, v: &[String], errs: &mut Vec<String>) {
    const FORMAT: &str = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    if v.len() > 16 {
        errs.push("may not have more than 16 values".into());
    }
    for s in v {
        let bad = if s.is_empty() {
            Some(format!("empty value not allowed, found in {name}"))
        } else if s.contains('*') {
            Some(format!("wildcard not allowed, found in {name}"))
        } else if s.matches('/').count() > 1 {
            Some(format!("{FORMAT}, found {s:?} in {name}"))
        } else if s.len() > 320 {
            Some(format!(
                "value cannot exceed 320 characters, found {s:?} in {name}"
            ))
        } else {
            match s.split_once('/') {
                Some(("", _)) => Some(format!("{FORMAT}, found empty namespace {s:?} in {name}")),
                Some((_, "")) => Some(format!(
                    "{FORMAT}, found empty serviceAccount {s:?} in {name}"
                )),
                _ => None,
            }
        };
        errs.extend(bad);
    }
}

/// Istio's `CheckValidPathTemplate`: `{*}` and `{**}` whole segments, `{**}` the
/// last operator, literal segments of templates plain pchars.
fn path_templates(name: &str, v: &[String], errs: &mut Vec<String>) {
    let pchar = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
    };
    for path in v {
        let templated = path.contains("{*}") || path.contains("{**}");
        let trimmed = path.trim_matches('/');
        let mut many = false;
        for seg in trimmed.split('/') {
            let problem = match seg {
                "{*}" | "{**}" if many => Some("{**} is not the last operator".to_owned()),
                "{*}" => None,
                "{**}" => {
                    many = true;
                    None
                }
                s if s.contains(['{', '}']) => {
                    Some("Contains '{' or '}' beyond a supported path template".to_owned())
                }
                s if templated && !pchar(s) => {
                    Some(format!("Contains segment {s} with invalid string literal"))
                }
                _ => None,
            };
            if let Some(p) = problem {
                errs.push(format!(
                    "invalid or unsupported path {trimmed}, found in {name}. {p}"
                ));
                break;
            }
        }
    }
}

/// Istio accepts the selector (no empty key, no wildcard).
pub fn selector_ok(s: &LabelSelector) -> bool {
    let mut errs = Vec::new();
    selector(Some(s), &mut errs);
    errs.is_empty()
}

fn selector(s: Option<&LabelSelector>, errs: &mut Vec<String>) {
    for (k, v) in s.iter().flat_map(|s| s.match_labels.iter()) {
        if k.is_empty() {
            errs.push(format!(
                "empty key is not supported in selector: \"{k}={v}\""
            ));
        }
        if k.contains('*') || v.contains('*') {
            errs.push(format!(
                "wildcard is not supported in selector: \"{k}={v}\""
            ));
        }
    }
}

fn targets(p: &AuthorizationPolicy, errs: &mut Vec<String>) {
    let refs: Vec<&model::AuthzTargetRef> = p
        .spec
        .target_refs
        .iter()
        .chain(p.spec.target_ref.as_ref())
        .collect();
    if p.spec.selector.is_some() && !refs.is_empty() {
        errs.push("only one of targetRefs or workloadSelector can be set".into());
    }
    for r in refs {
        if r.name.is_empty() {
            errs.push("targetRef name must be set".into());
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            errs.push(
                "targetRef namespace must not be set; cross namespace referencing is not supported"
                    .into(),
            );
        }
        match (r.group.as_str(), r.kind.as_str()) {
            ("" | "core", "Service") | ("gateway.networking.k8s.io", "Gateway") => {}
            ("networking.istio.io", "ServiceEntry") | ("gateway.networking.k8s.io", "GatewayClass") => errs.push(format!(
                "targetRef to a {} is not supported by ferrymesh; attach the policy to a Service or a Gateway",
                r.kind
            )),
            (g, k) => errs.push(format!(
                "targetRef must be to one of [Service, ServiceEntry, gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass] but was {g}/{k}"
            )),
        }
    }
}

fn custom(p: &AuthorizationPolicy, errs: &mut Vec<String>) {
    let s = &p.spec;
    let provider_name = s
        .provider
        .as_ref()
        .and_then(|v| v.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if s.action != Action::Custom {
        if s.provider.is_some() {
            let action = format!("{:?}", s.action).to_uppercase();
            errs.push(format!(
                "`provider` must not be with non CUSTOM action, found {action}"
            ));
        }
        return;
    }
    if s.rules.is_empty() {
        errs.push("CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request".into());
    } else if provider_name.is_empty() {
        errs.push("`provider.name` must not be empty".into());
    }
    for r in &s.rules {
        for f in &r.from {
            let src = &f.source;
            for (set, name) in [
                (!src.namespaces.is_empty(), "From.Namespaces"),
                (!src.not_namespaces.is_empty(), "From.NotNamespaces"),
                (!src.service_accounts.is_empty(), "From.ServiceAccounts"),
                (
                    !src.not_service_accounts.is_empty(),
                    "From.NotServiceAccounts",
                ),
                (!src.principals.is_empty(), "From.Principals"),
                (!src.not_principals.is_empty(), "From.NotPrincipals"),
                (!src.request_principals.is_empty(), "From.RequestPrincipals"),
                (
                    !src.not_request_principals.is_empty(),
                    "From.NotRequestPrincipals",
                ),
            ] {
                if set {
                    errs.push(format!(
                        "{name} is currently not supported with CUSTOM action"
                    ));
                }
            }
        }
        for w in &r.when {
            let k = w.key.as_str();
            if matches!(
                k,
                "source.namespace" | "source.serviceAccount" | "source.principal"
            ) || k.starts_with("request.auth.")
            {
                errs.push(format!("{k} is currently not supported with CUSTOM action"));
            }
        }
    }
}

fn source(s: &model::Source, i: usize, errs: &mut Vec<String>) {
    let identity = s.principals.len() + s.not_principals.len();
    let namespaces = s.namespaces.len() + s.not_namespaces.len();
    let accounts = s.service_accounts.len() + s.not_service_accounts.len();
    if identity + namespaces > 0 && accounts > 0 {
        errs.push(format!(
            "cannot set serviceAccounts with namespaces or principals, found at rule {i}"
        ));
    }
    let fields = [
        ("Principals", &s.principals),
        ("RequestPrincipals", &s.request_principals),
        ("Namespaces", &s.namespaces),
        ("IpBlocks", &s.ip_blocks),
        ("RemoteIpBlocks", &s.remote_ip_blocks),
        ("NotPrincipals", &s.not_principals),
        ("NotRequestPrincipals", &s.not_request_principals),
        ("NotNamespaces", &s.not_namespaces),
        ("NotIpBlocks", &s.not_ip_blocks),
        ("NotRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if accounts == 0 && fields.iter().all(|(_, v)| v.is_empty()) && s.unknown.is_empty() {
        errs.push(format!(
            "`from.source` must not be empty, found at rule {i}"
        ));
    }
    for v in [
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
    ] {
        ips(v, errs);
    }
    for (name, v) in fields {
        non_empty(name, v, errs);
    }
    service_accounts("ServiceAccounts", &s.service_accounts, errs);
    service_accounts("NotServiceAccounts", &s.not_service_accounts, errs);
}

fn operation(o: &model::Operation, i: usize, errs: &mut Vec<String>) {
    let fields = [
        ("Ports", &o.ports),
        ("Methods", &o.methods),
        ("Paths", &o.paths),
        ("Hosts", &o.hosts),
        ("NotPorts", &o.not_ports),
        ("NotMethods", &o.not_methods),
        ("NotPaths", &o.not_paths),
        ("NotHosts", &o.not_hosts),
    ];
    if fields.iter().all(|(_, v)| v.is_empty()) && o.unknown.is_empty() {
        errs.push(format!(
            "`to.operation` must not be empty, found at rule {i}"
        ));
    }
    ports(&o.ports, errs);
    ports(&o.not_ports, errs);
    for (name, v) in fields {
        non_empty(name, v, errs);
    }
    path_templates("Paths", &o.paths, errs);
    path_templates("NotPaths", &o.not_paths, errs);
}

/// The values of a `when` condition, as Istio's `ValidateAttribute` checks them.
fn attribute(key: &str, values: &[String]) -> Result<(), String> {
    if values.iter().any(String::is_empty) {
        return Err(format!("empty value not allowed, found in {key}"));
    }
    let mut errs = Vec::new();
    match ConditionKey::parse(key)? {
        ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
            ips(values, &mut errs)
        }
        ConditionKey::DestinationPort => ports(values, &mut errs),
        ConditionKey::SourceServiceAccount => service_accounts(key, values, &mut errs),
        _ => {}
    }
    errs.is_empty().then_some(()).ok_or_else(|| errs.join("; "))
}

fn condition(c: &model::Condition, errs: &mut Vec<String>) {
    if c.key.is_empty() {
        errs.push("`key` must not be empty".into());
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errs.push(format!(
            "at least one of `values` or `notValues` must be set for key {}",
            c.key
        ));
        return;
    }
    if let Err(e) = attribute(&c.key, &c.values) {
        errs.push(format!("invalid `value` for `key` {}: {e}", c.key));
    }
    if let Err(e) = attribute(&c.key, &c.not_values) {
        errs.push(format!("invalid `notValue` for `key` {}: {e}", c.key));
    }
}

/// Istio's `ValidateAuthorizationPolicy`; Err joins every message.
pub fn policy(p: &AuthorizationPolicy) -> Result<(), String> {
    let mut errs = Vec::new();
    targets(p, &mut errs);
    selector(p.spec.selector.as_ref(), &mut errs);
    custom(p, &mut errs);
    if p.spec.action == Action::Deny && p.spec.rules.is_empty() {
        errs.push("DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request".into());
    }
    for (i, r) in p.spec.rules.iter().enumerate() {
        for f in &r.from {
            source(&f.source, i, &mut errs);
        }
        for t in &r.to {
            operation(&t.operation, i, &mut errs);
        }
        for c in &r.when {
            condition(c, &mut errs);
        }
    }
    finish(errs, &p.metadata)
}

fn finish(errs: Vec<String>, m: &model::ObjectMeta) -> Result<(), String> {
    if errs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "invalid policy {}.{}: {}",
        m.name,
        m.namespace(),
        errs.join("; ")
    ))
}

/// Istio's `ValidatePeerAuthentication`.
pub fn peer_authentication(p: &PeerAuthentication) -> Result<(), String> {
    let mut errs = Vec::new();
    let s = &p.spec;
    let no_selector = s
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    if no_selector && !s.port_level_mtls.is_empty() {
        errs.push("mesh/namespace peer authentication cannot have port level mTLS".into());
    }
    for k in s.port_level_mtls.keys() {
        if port(k).is_none_or(|p| p == 0) {
            errs.push("port must be in range 1..65535".into());
        }
    }
    selector(s.selector.as_ref(), &mut errs);
    finish(errs, &p.metadata)
}
