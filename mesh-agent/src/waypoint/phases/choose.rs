//! Choose: the backend (by weight) and its endpoints in the caller's address family
//! first; the first endpoint by the backend's load-balancing and outlier state. A
//! route without a backend, a backend Service that does not exist, or one in
//! another namespace that no ReferenceGrant permits, answers 500 (`NC`); no healthy
//! endpoint answers 503 (`UH`).
use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::StatusCode;
use mesh_model::{
    l7::table::{Backend, BackendPolicy, RouteRule, Unresolved, WeightedBackend},
    state::State,
};

use crate::plan::Parent;
use crate::waypoint::{
    backend::BackendStats,
    conn::Conn,
    log::RequestLog,
    reply::{LocalReply, ResponseFlag},
};

/// Where the request goes.
pub struct Chosen {
    pub backend: Backend,
    pub endpoints: Vec<SocketAddr>,
    pub first: SocketAddr,
    pub policy: BackendPolicy,
    pub stats: Arc<BackendStats>,
    /// The rule's backendRef chosen (its own filters run next); None for a
    /// workload addressed directly.
    pub weighted: Option<usize>,
}

/// Endpoints of a backend Service port, in the original address's family first.
pub fn endpoints(state: &State, b: &Backend, v4: bool) -> Option<Vec<SocketAddr>> {
    let svc = state.services_by_key.get(&b.service)?;
    let port = svc.ports.iter().find(|p| p.port == b.port)?;
    let pick = |want_v4: bool| -> Vec<SocketAddr> {
        port.endpoints
            .iter()
            .filter_map(|w| if want_v4 { w.ipv4() } else { w.ipv6() })
            .map(|ip| SocketAddr::new(ip, port.target_port))
            .collect()
    };
    let first = pick(v4);
    Some(if first.is_empty() { pick(!v4) } else { first })
}

fn weighted(rule: &RouteRule) -> Option<(usize, &WeightedBackend)> {
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for (i, b) in rule.backends.iter().enumerate() {
        if n < u64::from(b.weight) {
            return Some((i, b));
        }
        n -= u64::from(b.weight);
    }
    None
}

fn misconfigured(body: &'static str) -> LocalReply {
    LocalReply::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        body,
        ResponseFlag::NoClusterFound,
    )
}

fn no_healthy_upstream() -> LocalReply {
    LocalReply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no healthy upstream\n",
        ResponseFlag::NoHealthyUpstream,
    )
}

/// The backend, its endpoints and which of the rule's backendRefs it is.
fn target(
    conn: &Conn,
    state: &State,
    rule: &RouteRule,
    log: &RequestLog,
) -> Result<(Backend, Vec<SocketAddr>, Option<usize>), LocalReply> {
    if let Parent::Workload { .. } = &conn.parent {
        let b = Backend {
            service: log.destination_service.clone(),
            port: conn.original.port(),
        };
        return Ok((b, vec![conn.original], None));
    }
    let (i, w) = weighted(rule).ok_or_else(|| misconfigured("route has no backend\n"))?;
    let b = &w.backend;
    match w.unresolved {
        Some(Unresolved::RefNotPermitted) => {
            tracing::warn!(route = %log.route, backend = %b.service, "backendRef into another namespace without a ReferenceGrant; answering 500");
            return Err(misconfigured("backend not permitted\n"));
        }
        Some(Unresolved::InvalidKind) => {
            tracing::warn!(route = %log.route, backend = %b.service, "backendRef of a kind other than Service; answering 500");
            return Err(misconfigured("backend kind not supported\n"));
        }
        // The Service may reach this node after the route: looked up below.
        Some(Unresolved::BackendNotFound) | None => {}
    }
    let eps = endpoints(state, b, conn.original.is_ipv4()).ok_or_else(|| {
        tracing::warn!(route = %log.route, backend = %b.service, port = b.port, "backend Service or port not found; answering 500");
        misconfigured("backend not found\n")
    })?;
    Ok((b.clone(), eps, Some(i)))
}

pub fn backend(
    conn: &Conn,
    state: &State,
    rule: &RouteRule,
    log: &mut RequestLog,
) -> Result<Chosen, LocalReply> {
    let (backend, endpoints, weighted) = target(conn, state, rule, log)?;
    log.destination_service = backend.service.clone();
    if endpoints.is_empty() {
        return Err(no_healthy_upstream());
    }
    let policy = state
        .l7
        .backend_policies
        .get(&backend.service)
        .cloned()
        .unwrap_or_default();
    let backends = &conn.l7.backends;
    let stats = backends.backend(&backend.service);
    let first = backends
        .pick(&stats, &endpoints, &policy, None, Instant::now())
        .ok_or_else(no_healthy_upstream)?;
    Ok(Chosen {
        backend,
        endpoints,
        first,
        policy,
        stats,
        weighted,
    })
}
