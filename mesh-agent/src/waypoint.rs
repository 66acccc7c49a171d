//! L7: the waypoint. A captured connection whose destination has L7 configuration
//! (a route, route-side TrafficPolicy, `appProtocol` http/http2/grpc, or an L7
//! AuthorizationPolicy / RequestAuthentication for the destination workload) is
//! served here instead of being spliced: hyper terminates HTTP/1.1 and HTTP/2, and
//! each request is routed, filtered, checked and sent upstream with the source
//! workload's identity.
//!
//! `mesh_model::l7` holds the compiled config; `router`, `filters` and `trace`
//! decide without I/O;
//! `backend` keeps state that outlives config changes; `upstream` dials; `server`
//! and `body` do the HTTP.
use std::{net::SocketAddr, sync::Arc};

use mesh_model::state::{ServiceInfo, State, WorkloadInfo};

mod attempt;
pub mod backend;
pub mod body;
pub mod filters;
pub mod policy;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod standalone;
pub mod trace;
pub mod upstream;

/// What a waypoint connection serves.
#[derive(Debug, Clone)]
pub enum Parent {
    /// A Service VIP and port.
    Service {
        service: Arc<ServiceInfo>,
        port: u16,
    },
    /// A workload addressed directly that has L7 policy.
    Workload { workload: Arc<WorkloadInfo> },
    /// An ingress gateway (`mesh-agent waypoint --gateway`): routes whose parentRef
    /// is this Gateway; `workload` is the gateway's own (edge policy applies to it).
    Gateway {
        key: String,
        workload: Arc<WorkloadInfo>,
    },
}

/// State of the waypoint that outlives config changes.
#[derive(Debug, Default)]
pub struct Runtime {
    pub backends: backend::Backends,
    pub buckets: ratelimit::Buckets,
}

const HTTP_APP_PROTOCOLS: [&str; 6] = [
    "http",
    "http2",
    "grpc",
    "kubernetes.io/h2c",
    "h2c",
    "kubernetes.io/http",
];

/// Label on a Service (or its Namespace) naming the Workload that is its shared
/// waypoint (`mesh-agent waypoint --hbone`), as Istio's `istio.io/use-waypoint`.
pub const USE_WAYPOINT_LABEL: &str = "ferrymesh.io/use-waypoint";

/// The shared waypoint a captured connection to `original` must go through.
pub fn use_waypoint(state: &State, original: SocketAddr) -> Option<Arc<WorkloadInfo>> {
    let svc = state.services_by_vip.get(&original.ip().to_canonical())?;
    let name = svc.labels.get(USE_WAYPOINT_LABEL).or_else(|| {
        state
            .objects
            .namespaces
            .iter()
            .find(|n| n.metadata.name == svc.namespace)
            .and_then(|n| n.metadata.labels.get(USE_WAYPOINT_LABEL))
    })?;
    if name == "none" {
        return None;
    }
    state
        .workloads
        .iter()
        .find(|w| w.namespace == svc.namespace && &w.name == name)
        .cloned()
}

/// The waypoint's parent for a captured connection to `original`, or None for L4.
/// No I/O: table-tested.
pub fn decide(state: &State, original: SocketAddr) -> Option<Parent> {
    let ip = original.ip().to_canonical();
    if let Some(svc) = state.services_by_vip.get(&ip) {
        let port = svc.ports.iter().find(|p| p.port == original.port())?;
        let by_protocol = port
            .app_protocol
            .as_deref()
            .is_some_and(|a| HTTP_APP_PROTOCOLS.contains(&a));
        let l7 = by_protocol
            || state.l7.service_has_l7(&svc.key(), port.port)
            || port
                .endpoints
                .iter()
                .any(|w| mesh_model::l7::workload_has_l7(state, w));
        return l7.then(|| Parent::Service {
            service: svc.clone(),
            port: port.port,
        });
    }
    let w = state.workloads_by_ip.get(&ip)?;
    (w.captured && mesh_model::l7::workload_has_l7(state, w)).then(|| Parent::Workload {
        workload: w.clone(),
    })
}

#[cfg(test)]
mod tests;
