//! The compiled L7 configuration: routes by parent, resilience by route and backend,
//! JWT rules. Built from the model by the config source (the one writer); a build
//! error rejects the whole config file.
use std::{collections::HashMap, sync::Arc, time::Duration};

use http::header::HeaderName;
use regex::Regex;

use super::{duration, jwt::JwtPolicy};
use crate::model::{
    self, BackendObjectRef, DirectResponseSpec, FilterType, GrpcRoute, HeaderModifier, HttpRoute,
    LoadBalancerType, Objects, ParentRef, PathMatchType, RequestRedirect, RouteFilter,
    TrafficPolicy, UrlRewrite, ValueMatch, ValueMatchType,
};

#[derive(Debug)]
pub struct BuildError {
    pub kind: &'static str,
    pub name: String,
    pub message: String,
}

/// A string condition: exact or an anchored regular expression.
#[derive(Debug, Clone)]
pub enum Cond {
    Exact(String),
    Regex(Regex),
}

impl Cond {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Cond::Exact(e) => e == v,
            Cond::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PathCond {
    Exact(String),
    /// Without a trailing slash; matches whole path segments.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone, Default)]
pub struct Match {
    pub path: Option<PathCond>,
    pub method: Option<String>,
    pub headers: Vec<(HeaderName, Cond)>,
    pub query: Vec<(String, Cond)>,
    /// gRPC: service and method conditions (GRPCRoute).
    pub grpc_service: Option<Cond>,
    pub grpc_method: Option<Cond>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

#[derive(Debug, Clone)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Rewrite(UrlRewrite),
    Redirect(RequestRedirect),
    Mirror {
        backend: Backend,
        percent: u32,
    },
    Direct(DirectResponseSpec),
    /// A reference that does not resolve: requests get 500, as the Gateway API says.
    Invalid(String),
}

/// A Service and port that requests are sent to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// namespace/name
    pub service: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct WeightedBackend {
    pub backend: Backend,
    pub weight: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub on_5xx: bool,
    pub on_reset: bool,
    pub on_connect_failure: bool,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub budget_percent: u32,
    pub min_retries: u32,
    pub allow_non_idempotent: bool,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    /// HTTP status, gRPC status, percentage.
    pub abort: Option<(u16, Option<u32>, f64)>,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// The bucket's name: the policy that set it.
    pub key: String,
    pub requests: u32,
    pub interval: Duration,
    pub burst: u32,
    pub per_source: bool,
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// One route rule, compiled, with the route-side policy merged in.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// "HTTPRoute ns/name" (or the parent Service for the implicit default route).
    pub route: String,
    pub rule: Option<String>,
    pub filters: Vec<Filter>,
    pub backends: Vec<WeightedBackend>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub fault: Option<Fault>,
    pub rate_limit: Option<RateLimit>,
}

/// One match of one rule, with its precedence.
#[derive(Debug, Clone)]
pub struct Entry {
    pub protocol: Protocol,
    /// The parent's port the route attached to (all ports when None).
    pub port: Option<u16>,
    pub m: Match,
    pub rule: Arc<RouteRule>,
    rank: Rank,
}

/// Gateway API precedence, larger first: exact path, then regular expression (the
/// spec leaves its place to implementations; like Envoy Gateway, before prefixes),
/// then the longest prefix; method; most headers; most query params; then route
/// name, rule and match order (config order stands in for creation time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
    /// Smaller first.
    order: std::cmp::Reverse<(String, usize, usize)>,
}

#[derive(Debug, Clone, Default)]
pub struct BackendPolicy {
    pub lb: LoadBalancerType,
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_parallel: Option<u32>,
    /// Consecutive 5xx, base ejection time, max ejected percent.
    pub outlier: Option<(u32, Duration, u32)>,
}

/// The L7 configuration of one parent (a Service or a Gateway).
#[derive(Debug, Default)]
pub struct Parent {
    /// Sorted by precedence, best first.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParentKey {
    Service(String),
    Gateway(String),
}

#[derive(Debug, Default)]
pub struct Table {
    pub parents: HashMap<ParentKey, Parent>,
    pub backend_policies: HashMap<String, BackendPolicy>,
    /// Route-side policy of each parent Service, for its implicit default route.
    service_policies: HashMap<String, RoutePolicy>,
    pub jwt: Vec<JwtPolicy>,
}

/// Route-side parts of TrafficPolicies.
#[derive(Debug, Clone, Default)]
struct RoutePolicy {
    retry: Option<model::RetryPolicy>,
    timeout: Option<model::TimeoutPolicy>,
    fault: Option<model::FaultInjection>,
    rate_limit: Option<(String, model::RateLimit)>,
}

impl RoutePolicy {
    fn merge(&mut self, p: &TrafficPolicy) {
        let key = format!("{}/{}", p.metadata.namespace(), p.metadata.name);
        if p.spec.retry.is_some() {
            self.retry = p.spec.retry.clone();
        }
        if p.spec.timeout.is_some() {
            self.timeout = p.spec.timeout.clone();
        }
        if p.spec.fault_injection.is_some() {
            self.fault = p.spec.fault_injection.clone();
        }
        if let Some(r) = &p.spec.rate_limit {
            self.rate_limit = Some((key, r.clone()));
        }
    }
}

fn is_core(group: Option<&str>) -> bool {
    matches!(group, None | Some("") | Some("core"))
}

struct Ctx<'a> {
    kind: &'static str,
    name: String,
    objects: &'a Objects,
}

impl Ctx<'_> {
    fn err(&self, message: String) -> BuildError {
        BuildError {
            kind: self.kind,
            name: self.name.clone(),
            message,
        }
    }
    fn regex(&self, field: &str, pattern: &str) -> Result<Regex, BuildError> {
        Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            self.err(format!(
                "{field}: {pattern:?} is not a valid regular expression: {e}"
            ))
        })
    }
    fn duration(&self, field: &str, s: &Option<String>) -> Result<Option<Duration>, BuildError> {
        s.as_deref()
            .map(|s| duration::parse(s).map_err(|e| self.err(format!("{field}: {e}"))))
            .transpose()
    }
    fn cond(&self, field: &str, kind: ValueMatchType, value: &str) -> Result<Cond, BuildError> {
        Ok(match kind {
            ValueMatchType::Exact => Cond::Exact(value.to_owned()),
            ValueMatchType::RegularExpression => Cond::Regex(self.regex(field, value)?),
        })
    }
    fn values(
        &self,
        field: &str,
        v: &[ValueMatch],
        header: bool,
    ) -> Result<Vec<(String, Cond)>, BuildError> {
        v.iter()
            .enumerate()
            .map(|(i, m)| {
                let name = if header {
                    m.name.to_ascii_lowercase()
                } else {
                    m.name.clone()
                };
                Ok((name, self.cond(&format!("{field}[{i}]"), m.kind, &m.value)?))
            })
            .collect()
    }
}

fn headers(
    ctx: &Ctx<'_>,
    field: &str,
    v: &[ValueMatch],
) -> Result<Vec<(HeaderName, Cond)>, BuildError> {
    ctx.values(field, v, true)?
        .into_iter()
        .map(|(n, c)| {
            HeaderName::from_bytes(n.as_bytes())
                .map(|h| (h, c))
                .map_err(|_| ctx.err(format!("{field}: {n:?} is not a valid header name")))
        })
        .collect()
}

fn check_modifier(ctx: &Ctx<'_>, field: &str, m: &HeaderModifier) -> Result<(), BuildError> {
    for n in m.set.iter().chain(&m.add).map(|h| &h.name).chain(&m.remove) {
        HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| ctx.err(format!("{field}: {n:?} is not a valid header name")))?;
    }
    for h in m.set.iter().chain(&m.add) {
        http::HeaderValue::from_str(&h.value).map_err(|_| {
            ctx.err(format!(
                "{field}: the value of {:?} is not a valid header value",
                h.name
            ))
        })?;
    }
    Ok(())
}

fn filters(
    ctx: &Ctx<'_>,
    ns: &str,
    field: &str,
    fs: &[RouteFilter],
) -> Result<Vec<Filter>, BuildError> {
    let mut out = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        let missing = |what: &str| ctx.err(format!("{field}: type {:?} needs {what}", f.kind));
        out.push(match f.kind {
            FilterType::RequestHeaderModifier => {
                let m = f.request_header_modifier.clone().ok_or_else(|| missing("requestHeaderModifier"))?;
                check_modifier(ctx, &field, &m)?;
                Filter::RequestHeaders(m)
            }
            FilterType::ResponseHeaderModifier => {
                let m = f.response_header_modifier.clone().ok_or_else(|| missing("responseHeaderModifier"))?;
                check_modifier(ctx, &field, &m)?;
                Filter::ResponseHeaders(m)
            }
            FilterType::URLRewrite => Filter::Rewrite(f.url_rewrite.clone().ok_or_else(|| missing("urlRewrite"))?),
            FilterType::RequestRedirect => {
                let r = f.request_redirect.clone().ok_or_else(|| missing("requestRedirect"))?;
                if let Some(code) = r.status_code {
                    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                        return Err(ctx.err(format!("{field}.requestRedirect.statusCode: {code} is not a redirect (301, 302, 303, 307, 308)")));
                    }
                }
                Filter::Redirect(r)
            }
            FilterType::RequestMirror => {
                let m = f.request_mirror.as_ref().ok_or_else(|| missing("requestMirror"))?;
                match backend_of(ctx, ns, &field, &m.backend_ref, None)? {
                    Some(backend) => Filter::Mirror {
                        backend,
                        percent: m.percent.unwrap_or(100).min(100),
                    },
                    None => return Err(ctx.err(format!("{field}.requestMirror.backendRef: a port is required"))),
                }
            }
            FilterType::ExtensionRef => {
                let r = f.extension_ref.as_ref().ok_or_else(|| missing("extensionRef"))?;
                if r.group != "ferrymesh.io" || r.kind != "DirectResponse" {
                    return Err(ctx.err(format!("{field}.extensionRef: only group ferrymesh.io kind DirectResponse is supported, not {}/{}", r.group, r.kind)));
                }
                match ctx
                    .objects
                    .direct_responses
                    .iter()
                    .find(|d| d.metadata.name == r.name && d.metadata.namespace() == ns)
                {
                    Some(d) => Filter::Direct(d.spec.clone()),
                    None => Filter::Invalid(format!("DirectResponse {ns}/{} not found", r.name)),
                }
            }
        });
    }
    Ok(out)
}

fn backend_of(
    ctx: &Ctx<'_>,
    ns: &str,
    field: &str,
    r: &BackendObjectRef,
    default_port: Option<u16>,
) -> Result<Option<Backend>, BuildError> {
    if !is_core(r.group.as_deref()) || r.kind.as_deref().is_some_and(|k| k != "Service") {
        return Err(ctx.err(format!("{field}: only Service backends are supported")));
    }
    let ns = r.namespace.as_deref().unwrap_or(ns);
    Ok(r.port.or(default_port).map(|port| Backend {
        service: format!("{ns}/{}", r.name),
        port,
    }))
}

fn parent_key(ctx: &Ctx<'_>, ns: &str, p: &ParentRef) -> Result<ParentKey, BuildError> {
    let pns = p.namespace.as_deref().unwrap_or(ns);
    let key = format!("{pns}/{}", p.name);
    match (p.group.as_deref(), p.kind.as_deref()) {
        (g, Some("Service")) if is_core(g) => Ok(ParentKey::Service(key)),
        (None | Some("gateway.networking.k8s.io"), None | Some("Gateway")) => Ok(ParentKey::Gateway(key)),
        (g, k) => Err(ctx.err(format!(
            "parentRefs: {}/{} is not a parent ferrymesh serves; use kind Service (group \"\") or Gateway",
            g.unwrap_or(""),
            k.unwrap_or("")
        ))),
    }
}

fn retry_of(
    ctx: &Ctx<'_>,
    route: Option<&model::RouteRetry>,
    policy: Option<&model::RetryPolicy>,
) -> Result<Option<Retry>, BuildError> {
    if route.is_none() && policy.is_none() {
        return Ok(None);
    }
    let mut r = Retry {
        attempts: 1,
        backoff: Duration::from_millis(25),
        max_backoff: Duration::from_millis(250),
        budget_percent: 20,
        min_retries: 3,
        ..Retry::default()
    };
    if let Some(p) = policy {
        if let Some(a) = p.attempts {
            r.attempts = a;
        }
        r.codes = p.codes.clone();
        for on in &p.retry_on {
            match on.as_str() {
                "5xx" => r.on_5xx = true,
                "reset" => r.on_reset = true,
                "connect-failure" => r.on_connect_failure = true,
                other => {
                    return Err(ctx.err(format!(
                        "retry.retryOn: {other:?} is not one of 5xx, reset, connect-failure"
                    )))
                }
            }
        }
        if let Some(b) = ctx.duration("retry.backoff", &p.backoff)? {
            r.backoff = b;
        }
        if let Some(b) = ctx.duration("retry.maxBackoff", &p.max_backoff)? {
            r.max_backoff = b;
        }
        r.budget_percent = p.budget_percent.unwrap_or(20);
        r.min_retries = p.min_retries.unwrap_or(3);
        r.allow_non_idempotent = p.allow_non_idempotent;
    }
    if let Some(rr) = route {
        if let Some(a) = rr.attempts {
            r.attempts = a;
        }
        if !rr.codes.is_empty() {
            r.codes = rr.codes.clone();
        }
        if let Some(b) = ctx.duration("retry.backoff", &rr.backoff)? {
            r.backoff = b;
        }
    }
    if r.codes.is_empty() && !r.on_5xx && !r.on_reset && !r.on_connect_failure {
        // GEP-1731: with no codes given, retry what is safe to retry.
        r.on_reset = true;
        r.on_connect_failure = true;
        r.codes = vec![503];
    }
    r.max_backoff = r.max_backoff.max(r.backoff);
    Ok(Some(r))
}

fn percentage(ctx: &Ctx<'_>, field: &str, p: f64) -> Result<f64, BuildError> {
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ctx.err(format!("{field}: {p} is not a percentage (0-100)")))
    }
}

/// Applies route-side policy to a rule.
fn apply_policy(
    ctx: &Ctx<'_>,
    rule: &mut RouteRule,
    route_retry: Option<&model::RouteRetry>,
    p: &RoutePolicy,
) -> Result<(), BuildError> {
    rule.retry = retry_of(ctx, route_retry, p.retry.as_ref())?;
    if let Some(t) = &p.timeout {
        if rule.request_timeout.is_none() {
            rule.request_timeout = ctx.duration("timeout.request", &t.request)?;
        }
        rule.idle_timeout = ctx.duration("timeout.idle", &t.idle)?;
    }
    if let Some(f) = &p.fault {
        rule.fault = Some(Fault {
            delay: f
                .delay
                .as_ref()
                .map(|d| {
                    Ok::<_, BuildError>((
                        duration::parse(&d.fixed_delay).map_err(|e| {
                            ctx.err(format!("faultInjection.delay.fixedDelay: {e}"))
                        })?,
                        percentage(ctx, "faultInjection.delay.percentage", d.percentage)?,
                    ))
                })
                .transpose()?,
            abort: f
                .abort
                .as_ref()
                .map(|a| {
                    let status = a.http_status.unwrap_or(503);
                    if !(200..=599).contains(&status) {
                        return Err(ctx.err(format!(
                            "faultInjection.abort.httpStatus: {status} is not an HTTP status"
                        )));
                    }
                    Ok((
                        status,
                        a.grpc_status,
                        percentage(ctx, "faultInjection.abort.percentage", a.percentage)?,
                    ))
                })
                .transpose()?,
        });
    }
    if let Some((key, r)) = &p.rate_limit {
        if r.requests == 0 {
            return Err(ctx.err("rateLimit.requests: must be at least 1".into()));
        }
        let interval = duration::parse(&r.interval)
            .map_err(|e| ctx.err(format!("rateLimit.interval: {e}")))?;
        if interval.is_zero() {
            return Err(ctx.err("rateLimit.interval: must be more than 0".into()));
        }
        let resp = r.response.clone().unwrap_or_default();
        rule.rate_limit = Some(RateLimit {
            key: key.clone(),
            requests: r.requests,
            interval,
            burst: r.burst.unwrap_or(r.requests).max(1),
            per_source: r.per_source,
            status: resp.status_code.unwrap_or(429),
            body: resp.body.unwrap_or_else(|| "rate limited\n".into()),
            headers: resp
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        });
    }
    Ok(())
}

/// Route-side policies for a route, a rule name and the parent services.
fn policies_for(
    policies: &[std::sync::Arc<TrafficPolicy>],
    ns: &str,
    kind: &str,
    route: &str,
    rule: Option<&str>,
) -> RoutePolicy {
    let mut out = RoutePolicy::default();
    // Route-wide first, then the rule's own section.
    let sections = if rule.is_some() {
        vec![None, rule]
    } else {
        vec![None]
    };
    for section in sections {
        for p in policies.iter().filter(|p| p.metadata.namespace() == ns) {
            if p.spec
                .target_refs
                .iter()
                .any(|t| t.kind == kind && t.name == route && t.section_name.as_deref() == section)
            {
                out.merge(p);
            }
        }
    }
    out
}

struct RuleInput<'a> {
    protocol: Protocol,
    kind: &'static str,
    ns: &'a str,
    name: &'a str,
    index: usize,
    rule_name: Option<&'a str>,
    filters: &'a [RouteFilter],
    backends: &'a [model::BackendRef],
    timeouts: Option<&'a model::RouteTimeouts>,
    retry: Option<&'a model::RouteRetry>,
    matches: Vec<Match>,
    parents: &'a [ParentRef],
}

impl Table {
    pub fn build(o: &Objects) -> Result<Table, BuildError> {
        let mut t = Table::default();
        // Route-side policy per parent Service; backend-side per backend Service.
        for p in &o.traffic_policies {
            let ns = p.metadata.namespace();
            let ctx = Ctx {
                kind: "TrafficPolicy",
                name: format!("{ns}/{}", p.metadata.name),
                objects: o,
            };
            if p.spec.target_refs.is_empty() {
                return Err(ctx.err("spec.targetRefs: at least one target is required".into()));
            }
            for r in &p.spec.target_refs {
                match r.kind.as_str() {
                    "Service" | "HTTPRoute" | "GRPCRoute" => {}
                    k => {
                        return Err(ctx.err(format!(
                        "spec.targetRefs: kind {k:?} is not one of Service, HTTPRoute, GRPCRoute"
                    )))
                    }
                }
                if r.kind != "Service" {
                    continue;
                }
                let key = format!("{ns}/{}", r.name);
                t.service_policies.entry(key.clone()).or_default().merge(p);
                let bp = t.backend_policies.entry(key).or_default();
                if let Some(lb) = &p.spec.load_balancer {
                    bp.lb = lb.kind;
                }
                if let Some(cb) = &p.spec.circuit_breaker {
                    bp.max_connections = cb.max_connections;
                    bp.max_pending = cb.max_pending_requests;
                    bp.max_parallel = cb.max_parallel_requests;
                }
                if let Some(od) = &p.spec.outlier_detection {
                    let base = ctx
                        .duration(
                            "spec.outlierDetection.baseEjectionTime",
                            &od.base_ejection_time,
                        )?
                        .unwrap_or(Duration::from_secs(30));
                    bp.outlier = Some((
                        od.consecutive5xx_errors.max(1),
                        base,
                        od.max_ejection_percent.unwrap_or(50).min(100),
                    ));
                }
            }
            // Validate route-side parts once, whatever they attach to.
            let mut probe = RouteRule::empty(String::new());
            let mut rp = RoutePolicy::default();
            rp.merge(p);
            apply_policy(&ctx, &mut probe, None, &rp)?;
        }
        for r in &o.http_routes {
            t.add_http(o, r)?;
        }
        for r in &o.grpc_routes {
            t.add_grpc(o, r)?;
        }
        for p in t.parents.values_mut() {
            p.entries.sort_by(|a, b| b.rank.cmp(&a.rank));
        }
        t.jwt = super::jwt::compile(o).map_err(|(name, message)| BuildError {
            kind: "RequestAuthentication",
            name,
            message,
        })?;
        Ok(t)
    }

    fn add_http(&mut self, o: &Objects, r: &HttpRoute) -> Result<(), BuildError> {
        let ns = r.metadata.namespace();
        let ctx = Ctx {
            kind: "HTTPRoute",
            name: format!("{ns}/{}", r.metadata.name),
            objects: o,
        };
        for (i, rule) in r.spec.rules.iter().enumerate() {
            let mut matches = Vec::new();
            for (j, m) in rule.matches.iter().enumerate() {
                let field = format!("spec.rules[{i}].matches[{j}]");
                let path = match &m.path {
                    // Gateway API default: PathPrefix "/".
                    None => Some(PathCond::Prefix(String::new())),
                    Some(p) => Some(match p.kind {
                        PathMatchType::Exact => {
                            if !p.value.starts_with('/') {
                                return Err(ctx.err(format!(
                                    "{field}.path.value: {:?} must start with /",
                                    p.value
                                )));
                            }
                            PathCond::Exact(p.value.clone())
                        }
                        PathMatchType::PathPrefix => {
                            if !p.value.starts_with('/') {
                                return Err(ctx.err(format!(
                                    "{field}.path.value: {:?} must start with /",
                                    p.value
                                )));
                            }
                            PathCond::Prefix(p.value.trim_end_matches('/').to_owned())
                        }
                        PathMatchType::RegularExpression => {
                            PathCond::Regex(ctx.regex(&format!("{field}.path.value"), &p.value)?)
                        }
                    }),
                };
                if let Some(method) = &m.method {
                    http::Method::from_bytes(method.as_bytes()).map_err(|_| {
                        ctx.err(format!("{field}.method: {method:?} is not an HTTP method"))
                    })?;
                }
                matches.push(Match {
                    path,
                    method: m.method.clone(),
                    headers: headers(&ctx, &format!("{field}.headers"), &m.headers)?,
                    query: ctx.values(&format!("{field}.queryParams"), &m.query_params, false)?,
                    grpc_service: None,
                    grpc_method: None,
                });
            }
            self.add_rule(
                &ctx,
                RuleInput {
                    protocol: Protocol::Http,
                    kind: "HTTPRoute",
                    ns,
                    name: &r.metadata.name,
                    index: i,
                    rule_name: rule.name.as_deref(),
                    filters: &rule.filters,
                    backends: &rule.backend_refs,
                    timeouts: rule.timeouts.as_ref(),
                    retry: rule.retry.as_ref(),
                    matches,
                    parents: &r.spec.parent_refs,
                },
            )?;
        }
        Ok(())
    }

    fn add_grpc(&mut self, o: &Objects, r: &GrpcRoute) -> Result<(), BuildError> {
        let ns = r.metadata.namespace();
        let ctx = Ctx {
            kind: "GRPCRoute",
            name: format!("{ns}/{}", r.metadata.name),
            objects: o,
        };
        for (i, rule) in r.spec.rules.iter().enumerate() {
            let mut matches = Vec::new();
            for (j, m) in rule.matches.iter().enumerate() {
                let field = format!("spec.rules[{i}].matches[{j}]");
                let (service, method) = match &m.method {
                    None => (None, None),
                    Some(mm) => {
                        if mm.service.is_none() && mm.method.is_none() {
                            return Err(ctx
                                .err(format!("{field}.method: give a service, a method or both")));
                        }
                        (
                            mm.service
                                .as_deref()
                                .map(|s| ctx.cond(&format!("{field}.method.service"), mm.kind, s))
                                .transpose()?,
                            mm.method
                                .as_deref()
                                .map(|s| ctx.cond(&format!("{field}.method.method"), mm.kind, s))
                                .transpose()?,
                        )
                    }
                };
                matches.push(Match {
                    headers: headers(&ctx, &format!("{field}.headers"), &m.headers)?,
                    grpc_service: service,
                    grpc_method: method,
                    ..Match::default()
                });
            }
            self.add_rule(
                &ctx,
                RuleInput {
                    protocol: Protocol::Grpc,
                    kind: "GRPCRoute",
                    ns,
                    name: &r.metadata.name,
                    index: i,
                    rule_name: rule.name.as_deref(),
                    filters: &rule.filters,
                    backends: &rule.backend_refs,
                    timeouts: None,
                    retry: None,
                    matches,
                    parents: &r.spec.parent_refs,
                },
            )?;
        }
        Ok(())
    }

    fn add_rule(&mut self, ctx: &Ctx<'_>, input: RuleInput<'_>) -> Result<(), BuildError> {
        let RuleInput {
            protocol,
            kind,
            ns,
            name,
            index,
            rule_name,
            filters: fs,
            backends,
            timeouts,
            retry,
            mut matches,
            parents,
        } = input;
        if parents.is_empty() {
            return Err(
                ctx.err("spec.parentRefs: at least one parent (a Service) is required".into())
            );
        }
        let field = format!("spec.rules[{index}]");
        let filters = filters(ctx, ns, &field, fs)?;
        if matches.is_empty() {
            matches.push(Match {
                path: (protocol == Protocol::Http).then(|| PathCond::Prefix(String::new())),
                ..Match::default()
            });
        }
        for parent in parents {
            let key = parent_key(ctx, ns, parent)?;
            let mut weighted = Vec::new();
            for (b, br) in backends.iter().enumerate() {
                let obj = BackendObjectRef {
                    group: br.group.clone(),
                    kind: br.kind.clone(),
                    name: br.name.clone(),
                    namespace: br.namespace.clone(),
                    port: br.port,
                };
                let backend = backend_of(
                    ctx,
                    ns,
                    &format!("{field}.backendRefs[{b}]"),
                    &obj,
                    parent.port,
                )?
                .ok_or_else(|| {
                    ctx.err(format!(
                        "{field}.backendRefs[{b}].port: required (the parent has no port either)"
                    ))
                })?;
                weighted.push(WeightedBackend {
                    backend,
                    weight: br.weight,
                });
            }
            let mut rule = RouteRule::empty(format!("{kind} {ns}/{name}"));
            rule.rule = rule_name.map(str::to_owned);
            rule.filters = filters.clone();
            rule.backends = weighted;
            if let Some(t) = timeouts {
                rule.request_timeout =
                    ctx.duration(&format!("{field}.timeouts.request"), &t.request)?;
                rule.backend_timeout = ctx.duration(
                    &format!("{field}.timeouts.backendRequest"),
                    &t.backend_request,
                )?;
            }
            // Policy: the parent Service's, then the route's, then the rule's.
            let mut policy = match &key {
                ParentKey::Service(s) => self.service_policies.get(s).cloned().unwrap_or_default(),
                ParentKey::Gateway(_) => RoutePolicy::default(),
            };
            let own = policies_for(&ctx.objects.traffic_policies, ns, kind, name, rule_name);
            if own.retry.is_some() {
                policy.retry = own.retry;
            }
            if own.timeout.is_some() {
                policy.timeout = own.timeout;
            }
            if own.fault.is_some() {
                policy.fault = own.fault;
            }
            if own.rate_limit.is_some() {
                policy.rate_limit = own.rate_limit;
            }
            apply_policy(ctx, &mut rule, retry, &policy)?;
            let rule = Arc::new(rule);
            let parent_entry = self.parents.entry(key).or_default();
            for (j, m) in matches.iter().enumerate() {
                let (path_kind, path_len) = match &m.path {
                    Some(PathCond::Exact(p)) => (3, p.len()),
                    Some(PathCond::Regex(r)) => (2, r.as_str().len()),
                    Some(PathCond::Prefix(p)) => (1, p.len()),
                    None => {
                        // GRPCRoute: exact over regex, then the longest service, method.
                        let (s, mm) = (&m.grpc_service, &m.grpc_method);
                        let exact = !matches!(s, Some(Cond::Regex(_)))
                            && !matches!(mm, Some(Cond::Regex(_)));
                        let len = |c: &Option<Cond>| match c {
                            Some(Cond::Exact(e)) => e.len(),
                            Some(Cond::Regex(r)) => r.as_str().len(),
                            None => 0,
                        };
                        (if exact { 2 } else { 1 }, len(s) * 1000 + len(mm))
                    }
                };
                parent_entry.entries.push(Entry {
                    protocol,
                    port: parent.port,
                    m: m.clone(),
                    rule: rule.clone(),
                    rank: Rank {
                        path_kind,
                        path_len,
                        method: m.method.is_some(),
                        headers: m.headers.len(),
                        query: m.query.len(),
                        order: std::cmp::Reverse((format!("{ns}/{name}"), index, j)),
                    },
                });
            }
        }
        Ok(())
    }

    /// The implicit route of a Service that has L7 handling but no route: all
    /// requests to the Service itself, with the Service's route-side policy.
    pub fn default_rule(&self, service: &str, port: u16) -> RouteRule {
        let mut rule = RouteRule::empty(format!("Service {service}"));
        rule.backends = vec![WeightedBackend {
            backend: Backend {
                service: service.to_owned(),
                port,
            },
            weight: 1,
        }];
        if let Some(p) = self.service_policies.get(service) {
            let ctx = Ctx {
                kind: "TrafficPolicy",
                name: service.to_owned(),
                objects: &Objects::default(),
            };
            // Validated when the table was built.
            let _ = apply_policy(&ctx, &mut rule, None, p);
        }
        rule
    }

    /// Whether a Service has routes or route-side policy (L7 handling).
    pub fn service_has_l7(&self, service: &str, port: u16) -> bool {
        self.parents
            .get(&ParentKey::Service(service.to_owned()))
            .is_some_and(|p| p.entries.iter().any(|e| e.port.is_none_or(|x| x == port)))
            || self.service_policies.contains_key(service)
    }
}

impl RouteRule {
    /// Requests to a workload addressed directly: sent to it, no route.
    pub fn direct(workload: String) -> RouteRule {
        let mut r = RouteRule::empty(format!("Workload {workload}"));
        r.backends.clear();
        r
    }

    pub fn empty(route: String) -> RouteRule {
        RouteRule {
            route,
            rule: None,
            filters: Vec::new(),
            backends: Vec::new(),
            request_timeout: None,
            backend_timeout: None,
            idle_timeout: None,
            retry: None,
            fault: None,
            rate_limit: None,
        }
    }
}
