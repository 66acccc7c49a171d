//! Building the table from the objects.
use std::{sync::Arc, time::Duration};

use crate::model::{self, GrpcRoute, HttpRoute, Objects, ParentRef, PathMatchType, RouteFilter};

use super::{ctx::*, filters::*, policy::*, types::*};

pub(super) struct RuleInput<'a> {
    pub(super) protocol: Protocol,
    pub(super) kind: &'static str,
    pub(super) ns: &'a str,
    pub(super) name: &'a str,
    pub(super) index: usize,
    pub(super) rule_name: Option<&'a str>,
    pub(super) filters: &'a [RouteFilter],
    pub(super) backends: &'a [model::BackendRef],
    pub(super) timeouts: Option<&'a model::RouteTimeouts>,
    pub(super) retry: Option<&'a model::RouteRetry>,
    pub(super) matches: Vec<Match>,
    pub(super) parents: &'a [ParentRef],
    /// Lower case; checked when the route was read.
    pub(super) hostnames: Vec<String>,
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
            // A policy that does not check is refused alone.
            if let Err(e) = check_traffic_policy(&ctx, p) {
                t.degraded.push((
                    format!("TrafficPolicy {}", ctx.name),
                    format!("{}: refused, not applied", e.message),
                ));
                continue;
            }
            for r in &p.spec.target_refs {
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
        }
        // A route that cannot be built is refused alone (a tenant's typo must not
        // freeze everyone's config): requests go as if it did not exist.
        for r in &o.http_routes {
            if let Err(e) = t.add_http(o, r) {
                t.refuse_route(e);
            }
        }
        for r in &o.grpc_routes {
            if let Err(e) = t.add_grpc(o, r) {
                t.refuse_route(e);
            }
        }
        for p in t.parents.values_mut() {
            p.entries.sort_by(|a, b| b.rank.cmp(&a.rank));
        }
        let (jwt, degraded) = crate::l7::jwt::compile(o);
        t.jwt = jwt;
        t.degraded.extend(degraded);
        Ok(t)
    }

    /// Takes out whatever a route that failed had added, and reports it.
    fn refuse_route(&mut self, e: BuildError) {
        let label = format!("{} {}", e.kind, e.name);
        for p in self.parents.values_mut() {
            p.entries.retain(|en| en.rule.route != label);
        }
        self.parents.retain(|_, p| !p.entries.is_empty());
        self.rejected.retain(|r| r.route != label);
        self.degraded.push((
            label,
            format!(
                "{}: refused, requests go as if the route did not exist",
                e.message
            ),
        ));
    }

    pub(super) fn add_http(&mut self, o: &Objects, r: &HttpRoute) -> Result<(), BuildError> {
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
                    hostnames: hostnames(&ctx, &r.spec.hostnames)?,
                },
            )?;
        }
        Ok(())
    }

    pub(super) fn add_grpc(&mut self, o: &Objects, r: &GrpcRoute) -> Result<(), BuildError> {
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
                    hostnames: hostnames(&ctx, &r.spec.hostnames)?,
                },
            )?;
        }
        Ok(())
    }

    /// The weighted backends of a rule, for one parent. A ref that does not
    /// resolve stays, marked: its share of requests is answered 500.
    pub(super) fn backends(
        ctx: &Ctx<'_>,
        input: &RuleInput<'_>,
        field: &str,
        parent: &ParentRef,
    ) -> Result<Vec<WeightedBackend>, BuildError> {
        let mut weighted = Vec::new();
        for (b, br) in input.backends.iter().enumerate() {
            let at = format!("{field}.backendRefs[{b}]");
            let ns = br.namespace.as_deref().unwrap_or(input.ns);
            let port = br.port.or(parent.port).ok_or_else(|| {
                ctx.err(format!(
                    "{at}.port: required (the parent has no port either)"
                ))
            })?;
            let backend = Backend {
                service: format!("{ns}/{}", br.name),
                port,
            };
            let filters = filters(ctx, input.ns, &at, &br.filters)?;
            // Another namespace's Service needs its owner's consent: a ReferenceGrant
            // in that namespace for this kind of route from this namespace. A
            // consumer route may send to the very Service it is attached to (GAMMA:
            // the caller could reach it anyway; upstream's MeshConsumerRoute).
            let own_parent = parent.kind.as_deref() == Some("Service")
                && parent.namespace.as_deref().unwrap_or(input.ns) == ns
                && parent.name == br.name;
            let permitted = ns == input.ns
                || own_parent
                || ctx.objects.reference_grants.iter().any(|g| {
                    g.metadata.namespace() == ns
                        && g.permits_service(input.kind, input.ns, &br.name)
                });
            let exists = || {
                ctx.objects
                    .services
                    .iter()
                    .any(|s| s.metadata.name == br.name && s.metadata.namespace() == ns)
            };
            let unresolved = if !is_service(br.group.as_deref(), br.kind.as_deref()) {
                Some(Unresolved::InvalidKind)
            } else if !permitted {
                Some(Unresolved::RefNotPermitted)
            } else if !exists() {
                Some(Unresolved::BackendNotFound)
            } else {
                None
            };
            weighted.push(WeightedBackend {
                backend,
                weight: br.weight,
                unresolved,
                filters,
            });
        }
        Ok(weighted)
    }

    /// Route-side policy of a rule: the parent Service's, then the route's, then
    /// the rule's.
    pub(super) fn rule_policy(
        &self,
        ctx: &Ctx<'_>,
        input: &RuleInput<'_>,
        key: &ParentKey,
    ) -> RoutePolicy {
        let mut policy = match key {
            ParentKey::Service(s) => self.service_policies.get(s).cloned().unwrap_or_default(),
            ParentKey::Gateway(_) => RoutePolicy::default(),
        };
        let own = policies_for(
            &ctx.objects.traffic_policies,
            input.ns,
            input.kind,
            input.name,
            input.rule_name,
        );
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
        policy
    }

    /// One rule for one parent, compiled.
    pub(super) fn rule(
        &self,
        ctx: &Ctx<'_>,
        input: &RuleInput<'_>,
        filters: &[Filter],
        parent: &ParentRef,
        key: &ParentKey,
    ) -> Result<RouteRule, BuildError> {
        let field = format!("spec.rules[{}]", input.index);
        let mut rule = RouteRule::empty(format!("{} {}/{}", input.kind, input.ns, input.name));
        rule.rule = input.rule_name.map(str::to_owned);
        rule.filters = filters.to_vec();
        rule.backends = Self::backends(ctx, input, &field, parent)?;
        rule.hostnames = input.hostnames.to_vec();
        let policy = self.rule_policy(ctx, input, key);
        apply_policy(ctx, &mut rule, input.retry, &policy)?;
        // The route's own timeouts win over policy; 0s disables one (GEP-1742).
        if let Some(t) = input.timeouts {
            let request = ctx.duration(&format!("{field}.timeouts.request"), &t.request)?;
            let backend = ctx.duration(
                &format!("{field}.timeouts.backendRequest"),
                &t.backend_request,
            )?;
            if let (Some(r), Some(b)) = (request, backend) {
                if !r.is_zero() && b > r {
                    return Err(ctx.err(format!(
                        "{field}.timeouts: backendRequest ({b:?}) must not be longer than request ({r:?})"
                    )));
                }
            }
            if let Some(r) = request {
                rule.request_timeout = (!r.is_zero()).then_some(r);
            }
            if let Some(b) = backend {
                rule.backend_timeout = (!b.is_zero()).then_some(b);
            }
        }
        Ok(rule)
    }

    pub(super) fn add_rule(
        &mut self,
        ctx: &Ctx<'_>,
        mut input: RuleInput<'_>,
    ) -> Result<(), BuildError> {
        if input.parents.is_empty() {
            return Err(
                ctx.err("spec.parentRefs: at least one parent (a Service) is required".into())
            );
        }
        let field = format!("spec.rules[{}]", input.index);
        let filters = filters(ctx, input.ns, &field, input.filters)?;
        if input.matches.is_empty() {
            input.matches.push(Match {
                path: (input.protocol == Protocol::Http).then(|| PathCond::Prefix(String::new())),
                ..Match::default()
            });
        }
        for parent in input.parents {
            let key = parent_key(ctx, input.ns, parent)?;
            let consumer = match attachment(&key, input.ns) {
                Attach::Producer => None,
                Attach::Consumer => Some(input.ns.to_owned()),
                Attach::Refused(reason) => {
                    self.rejected.push(Rejected {
                        route: format!("{} {}/{}", input.kind, input.ns, input.name),
                        parent: match &key {
                            ParentKey::Service(s) => format!("Service {s}"),
                            ParentKey::Gateway(g) => format!("Gateway {g}"),
                        },
                        reason,
                    });
                    continue;
                }
            };
            let rule = Arc::new(self.rule(ctx, &input, &filters, parent, &key)?);
            let entries = &mut self.parents.entry(key).or_default().entries;
            for (j, m) in input.matches.iter().enumerate() {
                let rank = rank(&input, m, j);
                entries.push(Entry {
                    protocol: input.protocol,
                    port: parent.port,
                    consumer: consumer.clone(),
                    m: m.clone(),
                    rule: rule.clone(),
                    rank,
                });
            }
        }
        Ok(())
    }
}

/// A route's hostnames, checked as the Gateway API's webhook does: DNS names in
/// lower case, optionally `*.` and a suffix; no IP addresses, no port.
fn hostnames(ctx: &Ctx<'_>, names: &[String]) -> Result<Vec<String>, BuildError> {
    names
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            let ip = name.parse::<std::net::IpAddr>().is_ok();
            if ip || name.len() > 253 || !name.split('.').all(label_ok) {
                return Err(ctx.err(format!(
                    "spec.hostnames[{i}]: {h:?} is not a DNS name (lower case, optionally *. and a suffix; no IP, no port)"
                )));
            }
            Ok(h.clone())
        })
        .collect()
}

/// Everything about a TrafficPolicy that can be wrong, checked before any of it
/// is merged.
fn check_traffic_policy(ctx: &Ctx<'_>, p: &model::TrafficPolicy) -> Result<(), BuildError> {
    if p.spec.target_refs.is_empty() {
        return Err(ctx.err("spec.targetRefs: at least one target is required".into()));
    }
    for r in &p.spec.target_refs {
        if !matches!(r.kind.as_str(), "Service" | "HTTPRoute" | "GRPCRoute") {
            return Err(ctx.err(format!(
                "spec.targetRefs: kind {:?} is not one of Service, HTTPRoute, GRPCRoute",
                r.kind
            )));
        }
    }
    if let Some(od) = &p.spec.outlier_detection {
        ctx.duration(
            "spec.outlierDetection.baseEjectionTime",
            &od.base_ejection_time,
        )?;
    }
    // Route-side parts, whatever they attach to.
    let mut probe = RouteRule::empty(String::new());
    let mut rp = RoutePolicy::default();
    rp.merge(p);
    apply_policy(ctx, &mut probe, None, &rp)
}

/// How a route in namespace `ns` attaches to a parent (Gateway API rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attach {
    /// The Service's own namespace: for every client.
    Producer,
    /// Another namespace's Service: for this namespace's clients only (GAMMA).
    Consumer,
    /// Not attached.
    Refused(&'static str),
}

pub(super) fn attachment(key: &ParentKey, ns: &str) -> Attach {
    let parent_ns = |k: &str| k.split_once('/').map_or("", |(n, _)| n).to_owned();
    match key {
        ParentKey::Service(s) if parent_ns(s) == ns => Attach::Producer,
        ParentKey::Service(_) => Attach::Consumer,
        // allowedRoutes defaults to `from: Same`, and ferrymesh's Gateways have no
        // listener settings to widen it.
        ParentKey::Gateway(g) if parent_ns(g) == ns => Attach::Producer,
        ParentKey::Gateway(_) => Attach::Refused(
            "NotAllowedByListeners: the Gateway accepts routes from its own namespace only",
        ),
    }
}

/// A match's precedence among the parent's entries.
fn rank(input: &RuleInput<'_>, m: &Match, j: usize) -> Rank {
    let (path_kind, path_len) = match &m.path {
        Some(PathCond::Exact(p)) => (3, p.len()),
        Some(PathCond::Regex(r)) => (2, r.as_str().len()),
        Some(PathCond::Prefix(p)) => (1, p.len()),
        None => {
            // GRPCRoute: exact over regex, then the longest service, method.
            let (s, mm) = (&m.grpc_service, &m.grpc_method);
            let exact = !matches!(s, Some(Cond::Regex(_))) && !matches!(mm, Some(Cond::Regex(_)));
            let len = |c: &Option<Cond>| match c {
                Some(Cond::Exact(e)) => e.len(),
                Some(Cond::Regex(r)) => r.as_str().len(),
                None => 0,
            };
            (if exact { 2 } else { 1 }, len(s) * 1000 + len(mm))
        }
    };
    Rank {
        path_kind,
        path_len,
        method: m.method.is_some(),
        headers: m.headers.len(),
        query: m.query.len(),
        order: std::cmp::Reverse((format!("{}/{}", input.ns, input.name), input.index, j)),
    }
}
