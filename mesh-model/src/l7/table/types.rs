//! What the route table holds.
use std::{collections::HashMap, sync::Arc, time::Duration};

use http::header::HeaderName;
use regex::Regex;

use crate::model::{
    self, DirectResponseSpec, HeaderModifier, LoadBalancerType, RequestRedirect, TrafficPolicy,
    UrlRewrite,
};

use crate::l7::jwt::JwtPolicy;

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
        /// numerator / denominator of requests are copied.
        fraction: (u32, u32),
    },
    Cors(CorsPolicy),
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

/// A CORS filter, compiled.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// Anchored patterns of `scheme://host[:port]`.
    pub origins: Vec<Regex>,
    pub credentials: bool,
    /// `*` alone: any method (the requested one is echoed).
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub max_age: u32,
}

/// Why a backendRef does not resolve (the Gateway API's `ResolvedRefs` reasons);
/// its share of requests is answered 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// Into another namespace, and no ReferenceGrant there permits it.
    RefNotPermitted,
    /// Not a Service (core group): ferrymesh cannot send to it.
    InvalidKind,
    /// No such Service.
    BackendNotFound,
}

impl Unresolved {
    pub fn reason(self) -> &'static str {
        match self {
            Unresolved::RefNotPermitted => "RefNotPermitted",
            Unresolved::InvalidKind => "InvalidKind",
            Unresolved::BackendNotFound => "BackendNotFound",
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            Unresolved::RefNotPermitted => {
                "a backendRef into another namespace has no ReferenceGrant"
            }
            Unresolved::InvalidKind => "a backendRef is not a Service (group \"\", kind Service)",
            Unresolved::BackendNotFound => "a backendRef names a Service that does not exist",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WeightedBackend {
    pub backend: Backend,
    pub weight: u32,
    /// Set when the ref does not resolve: its share of requests is answered 500.
    pub unresolved: Option<Unresolved>,
    /// The backendRef's own filters, run after the rule's for requests sent to it.
    pub filters: Vec<Filter>,
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
    /// The route's hostnames, lower case (`*.suffix` for wildcards); any when empty.
    pub hostnames: Vec<String>,
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
    /// A consumer route (GAMMA): set to the route's namespace when it is not the
    /// Service's; it applies only to clients in that namespace, and for them
    /// instead of the Service's own (producer) routes.
    pub consumer: Option<String>,
    pub m: Match,
    pub rule: Arc<RouteRule>,
    pub(super) rank: Rank,
}

/// Gateway API precedence, larger first: exact path, then regular expression (the
/// spec leaves its place to implementations; like Envoy Gateway, before prefixes),
/// then the longest prefix; method; most headers; most query params; then route
/// name, rule and match order (config order stands in for creation time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    pub(super) path_kind: u8,
    pub(super) path_len: usize,
    pub(super) method: bool,
    pub(super) headers: usize,
    pub(super) query: usize,
    /// Smaller first.
    pub(super) order: std::cmp::Reverse<(String, usize, usize)>,
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

/// A route attachment that was not made, and why (reported by the control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `HTTPRoute ns/name`
    pub route: String,
    pub parent: String,
    pub reason: &'static str,
}

#[derive(Debug, Default)]
pub struct Table {
    pub parents: HashMap<ParentKey, Parent>,
    /// Attachments refused by the namespace rules.
    pub rejected: Vec<Rejected>,
    /// (`Kind ns/name`, what could not be compiled and how it is enforced instead).
    pub degraded: Vec<(String, String)>,
    pub backend_policies: HashMap<String, BackendPolicy>,
    /// Route-side policy of each parent Service, for its implicit default route.
    pub(super) service_policies: HashMap<String, RoutePolicy>,
    pub jwt: Vec<JwtPolicy>,
}

/// Route-side parts of TrafficPolicies.
#[derive(Debug, Clone, Default)]
pub(super) struct RoutePolicy {
    pub(super) retry: Option<model::RetryPolicy>,
    pub(super) timeout: Option<model::TimeoutPolicy>,
    pub(super) fault: Option<model::FaultInjection>,
    pub(super) rate_limit: Option<(String, model::RateLimit)>,
}

impl RoutePolicy {
    pub(super) fn merge(&mut self, p: &TrafficPolicy) {
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
            hostnames: Vec::new(),
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
