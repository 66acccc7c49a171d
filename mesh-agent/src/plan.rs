//! How a connection leaves a pod: one pure function from (state, local pods,
//! original destination) to a `Plan`, as ztunnel's `build_request`. The L4 outbound
//! path and the waypoint's upstream execute plans with the same executors
//! (`connect`), so counters, logs and errors exist once. Table-tested.
use std::{net::SocketAddr, sync::Arc};

use mesh_common::ports;
use mesh_model::{
    identity::Identity,
    state::{ServiceInfo, State, WorkloadInfo},
};

/// How meshed destinations on other nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// HBONE: mutual TLS.
    Hbone,
    /// Plaintext, for measurements and debugging only.
    Plaintext,
}

/// What the waypoint serves a connection as.
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

/// One HBONE stream: to whom, over which address, for which target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HboneTarget {
    /// The identity the peer must prove (the destination's, or the waypoint's).
    pub identity: Identity,
    /// The peer's HBONE address (`ip:15008`).
    pub via: SocketAddr,
    /// The CONNECT authority: the destination the peer delivers to.
    pub target: SocketAddr,
}

/// What happens to a connection a pod's application made.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Served by this agent's waypoint module (HTTP terminated here).
    Waypoint(Parent),
    /// Sent on, as `Route` says.
    Connect(Route),
}

/// How bytes leave the pod (executed by `connect::connect`).
#[derive(Debug, Clone)]
pub enum Route {
    /// Through the Service's shared waypoint: one HBONE stream to the waypoint whose
    /// target is the Service address itself.
    SharedWaypoint {
        waypoint: String,
        tunnel: HboneTarget,
    },
    /// A pod enrolled on this node: delivered directly, after its policy.
    SameNode { workload: String, addr: SocketAddr },
    /// A meshed pod on another node.
    Hbone {
        workload: String,
        tunnel: HboneTarget,
    },
    /// Plain TCP from the pod.
    Passthrough { addr: SocketAddr, why: Passthrough },
}

/// Why a connection goes out in plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// The destination is not in the mesh (or not known to it).
    NotMeshed,
    /// The agent runs with `--tunnel plaintext`.
    PlaintextTunnel,
}

impl Route {
    /// The address bytes are for.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Route::SharedWaypoint { tunnel, .. } | Route::Hbone { tunnel, .. } => tunnel.target,
            Route::SameNode { addr, .. } | Route::Passthrough { addr, .. } => *addr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("service {service} has no port {port}; check the Service's spec.ports")]
    NoSuchServicePort { service: String, port: u16 },
    #[error("service {service} port {port} has no endpoint of this address family; check the Service's selector and the workloads' labels and addresses")]
    NoEndpoint { service: String, port: u16 },
    #[error("the shared waypoint {waypoint} of {service} has no address of this family")]
    WaypointFamily { waypoint: String, service: String },
}

/// What a plan reads besides the state.
pub struct Inputs<'a> {
    pub state: &'a State,
    /// Whether an address belongs to a pod enrolled on this node.
    pub is_local: &'a dyn Fn(std::net::IpAddr) -> bool,
    pub trust_domain: &'a str,
    pub tunnel: Tunnel,
}

fn identity(i: &Inputs<'_>, w: &WorkloadInfo) -> Identity {
    Identity::new(i.trust_domain, w.namespace(), w.service_account())
}

fn shared_waypoint(
    i: &Inputs<'_>,
    svc: &ServiceInfo,
    wp: &WorkloadInfo,
    original: SocketAddr,
) -> Result<Route, PlanError> {
    let ip = wp
        .address_like(&original.ip())
        .ok_or_else(|| PlanError::WaypointFamily {
            waypoint: wp.key(),
            service: svc.key(),
        })?;
    Ok(Route::SharedWaypoint {
        waypoint: wp.key(),
        tunnel: HboneTarget {
            identity: identity(i, wp),
            via: SocketAddr::new(ip, ports::HBONE),
            target: original,
        },
    })
}

/// The waypoint's parent for a connection to `original`, or None for L4.
pub fn l7_parent(state: &State, original: SocketAddr) -> Option<Parent> {
    let ip = original.ip().to_canonical();
    if let Some(svc) = state.services_by_vip.get(&ip) {
        let port = svc.ports.iter().find(|p| p.port == original.port())?;
        return port.l7.then(|| Parent::Service {
            service: svc.clone(),
            port: port.port,
        });
    }
    let w = state.workloads_by_ip.get(&ip)?;
    (w.captured && w.l7).then(|| Parent::Workload {
        workload: w.clone(),
    })
}

/// A Service VIP resolved to one of its endpoints (round robin).
fn endpoint(svc: &ServiceInfo, original: SocketAddr) -> Result<SocketAddr, PlanError> {
    let port = svc
        .ports
        .iter()
        .find(|p| p.port == original.port())
        .ok_or_else(|| PlanError::NoSuchServicePort {
            service: svc.key(),
            port: original.port(),
        })?;
    port.pick(&original).ok_or_else(|| PlanError::NoEndpoint {
        service: svc.key(),
        port: original.port(),
    })
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// What happens to a connection a pod's application made to `original`: its
/// Service's shared waypoint, this agent's waypoint (L7), or a route. No I/O.
pub fn plan(i: &Inputs<'_>, original: SocketAddr) -> Result<Plan, PlanError> {
    let original = canonical(original);
    let service = i.state.services_by_vip.get(&original.ip());
    if let Some((svc, wp)) = service.and_then(|s| s.waypoint.as_ref().map(|w| (s, w))) {
        return shared_waypoint(i, svc, wp, original).map(Plan::Connect);
    }
    if let Some(parent) = l7_parent(i.state, original) {
        return Ok(Plan::Waypoint(parent));
    }
    route(i, original).map(Plan::Connect)
}

/// How bytes for `original` leave the pod (a Service VIP resolves to one of its
/// endpoints); also the waypoint's route to the endpoint it chose. No I/O.
pub fn route(i: &Inputs<'_>, original: SocketAddr) -> Result<Route, PlanError> {
    let original = canonical(original);
    let addr = match i.state.services_by_vip.get(&original.ip()) {
        Some(svc) => endpoint(svc, original)?,
        None => original,
    };
    let Some(w) = i
        .state
        .workloads_by_ip
        .get(&addr.ip())
        .filter(|w| w.captured)
    else {
        return Ok(Route::Passthrough {
            addr,
            why: Passthrough::NotMeshed,
        });
    };
    if (i.is_local)(addr.ip()) {
        return Ok(Route::SameNode {
            workload: w.key(),
            addr,
        });
    }
    Ok(match i.tunnel {
        Tunnel::Hbone => Route::Hbone {
            workload: w.key(),
            tunnel: HboneTarget {
                identity: identity(i, w),
                via: SocketAddr::new(addr.ip(), ports::HBONE),
                target: addr,
            },
        },
        Tunnel::Plaintext => Route::Passthrough {
            addr,
            why: Passthrough::PlaintextTunnel,
        },
    })
}

#[cfg(test)]
mod tests;
