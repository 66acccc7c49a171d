//! `meshctl explain`: the decision trail for one connection a pod of this node
//! would make, computed with the data path's own functions: `plan::plan` (how it
//! leaves the pod) and `enforce::connection_verdict` (the Service's and the
//! destination's AuthorizationPolicies), never a re-implementation. Pure: the
//! admin API calls it with the state in force; the tests with a table of cases.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use mesh_model::{
    authz::{Decision, Judging, Policy},
    explain::{Explanation, PolicyStep, RequestStep},
    identity::Identity,
    model::Action,
    state::{State, WorkloadInfo},
};

use crate::{
    enforce::{connection_verdict, Caller},
    plan::{self, Passthrough, Plan, Route},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no workload {0} in the config this agent holds; give namespace/pod")]
    NoSuchPod(String),
    #[error("{0:?} is not ip:port")]
    BadTarget(String),
    #[error("not an HTTP request line: {0}")]
    BadRequest(String),
}

fn describe(plan: &Result<Plan, plan::PlanError>) -> String {
    match plan {
        Ok(Plan::Waypoint(parent)) => {
            let what = match parent {
                plan::Parent::Service { service, port } => {
                    format!("service {} port {port}", service.key())
                }
                plan::Parent::Workload { workload } => {
                    format!("workload {} (it has L7 policy)", workload.key())
                }
                plan::Parent::Gateway { key, .. } => format!("Gateway {key}"),
            };
            format!("this node's waypoint terminates HTTP for {what}; routes and request policy decide each request")
        }
        Ok(Plan::Connect(Route::SameNode { workload, addr })) => {
            format!("same node: delivered by this agent to {workload} at {addr}")
        }
        Ok(Plan::Connect(Route::Hbone { workload, tunnel })) => format!(
            "HBONE (mTLS) to {workload} at {} via {}, peer must prove {}",
            tunnel.target, tunnel.via, tunnel.identity
        ),
        Ok(Plan::Connect(Route::SharedWaypoint { waypoint, tunnel })) => format!(
            "HBONE to the Service's shared waypoint {waypoint} at {}",
            tunnel.via
        ),
        Ok(Plan::Connect(Route::Passthrough { addr, why })) => match why {
            Passthrough::NotMeshed => format!("passthrough: {addr} is not in the mesh, plain TCP"),
            Passthrough::PlaintextTunnel => {
                format!("passthrough: --tunnel plaintext, plain TCP to {addr}")
            }
        },
        Err(e) => format!("no plan: {e}"),
    }
}

/// Whether `p` alone matches: the data path's verdict over that one policy.
fn step(
    p: &Policy,
    attached_to: &str,
    caller: Caller<'_>,
    target: SocketAddr,
    judging: Judging,
) -> PolicyStep {
    let v = connection_verdict(std::iter::once(p), caller, target, judging);
    let matches = match p.action {
        _ if p.dry_run => v.dry_run.iter().any(|d| d.policy.is_some()),
        Action::Allow => v.decision == Decision::Allow,
        // CUSTOM is enforced as DENY for what its rules match (fail closed).
        Action::Deny | Action::Custom => v.decision != Decision::Allow,
        Action::Audit => !v.audited.is_empty(),
    };
    PolicyStep {
        policy: p.name.clone(),
        attached_to: attached_to.to_owned(),
        action: format!("{:?}", p.action).to_uppercase(),
        dry_run: p.dry_run,
        matches,
    }
}

fn verdict_words(d: &Decision) -> (String, String) {
    match d {
        Decision::Allow => (
            "allow".into(),
            "no DENY policy matches, and an ALLOW policy matches or none applies".into(),
        ),
        Decision::Deny { policy } if policy.is_empty() => (
            "deny".into(),
            "ALLOW policies apply and none matches".into(),
        ),
        Decision::Deny { policy } => ("deny".into(), format!("DENY policy {policy} matches")),
    }
}

/// What the policies decided, where, and the destination they were judged for.
struct Judged<'s> {
    steps: Vec<PolicyStep>,
    decision: Decision,
    /// Refused by the Service's policies, at this agent.
    refused_here: bool,
    dest: Option<(&'s Arc<WorkloadInfo>, SocketAddr)>,
}

/// The Service's attached policies (judged where the connection leaves, as
/// outbound does before it connects; the waypoint judges them per request), then
/// the destination's (as its agent judges the connection).
fn judge<'s>(
    state: &'s State,
    plan: &Result<Plan, plan::PlanError>,
    caller: Caller<'_>,
    original: SocketAddr,
) -> Judged<'s> {
    let mut steps = Vec::new();
    let mut decision = Decision::Allow;
    let mut refused_here = false;
    let at_waypoint = matches!(plan, Ok(Plan::Waypoint(_)));
    let service = state.services_by_vip.get(&original.ip().to_canonical());
    if let Some(svc) = service.filter(|s| !at_waypoint && !s.policies.is_empty()) {
        let judging = match plan {
            Ok(Plan::Connect(Route::SharedWaypoint { .. })) => Judging::PerRequest,
            _ => Judging::L4Only,
        };
        let key = format!("service {}", svc.key());
        let policies = svc.policies.iter();
        steps.extend(policies.map(|p| step(p, &key, caller, original, judging)));
        let all = svc.policies.iter().map(AsRef::as_ref);
        decision = connection_verdict(all, caller, original, judging).decision;
        refused_here = decision != Decision::Allow;
    }
    let delivered = match plan {
        Ok(Plan::Connect(r @ (Route::SameNode { .. } | Route::Hbone { .. }))) => Some(r.addr()),
        _ => None,
    };
    let dest = delivered.and_then(|a| state.workloads_by_ip.get(&a.ip()).map(|w| (w, a)));
    if let (Some((w, addr)), Decision::Allow) = (dest, &decision) {
        // L4 unless the destination's agent judges the requests itself.
        let judging = if w.l7 {
            Judging::PerRequest
        } else {
            Judging::L4Only
        };
        let key = w.key();
        steps.extend(
            w.policies
                .iter()
                .map(|p| step(p, &key, caller, addr, judging)),
        );
        let all = w.policies.iter().map(AsRef::as_ref);
        decision = connection_verdict(all, caller, addr, judging).decision;
    }
    Judged {
        steps,
        decision,
        refused_here,
        dest,
    }
}

/// The trail for `source` (a workload key) connecting to `target`.
pub fn explain(i: &plan::Inputs<'_>, source: &str, target: &str) -> Result<Explanation, Error> {
    let original: SocketAddr = target
        .parse()
        .map_err(|_| Error::BadTarget(target.to_owned()))?;
    let state = i.state;
    let src = state
        .workloads
        .iter()
        .find(|w| w.key() == source)
        .ok_or_else(|| Error::NoSuchPod(source.to_owned()))?;
    let identity = Identity::new(i.trust_domain, src.namespace(), src.service_account());
    let ip = family_address(src, original.ip());
    let caller = Caller {
        identity: Some(&identity),
        ip,
    };
    let plan = plan::plan(i, original);
    let at_waypoint = matches!(plan, Ok(Plan::Waypoint(_)));
    let Judged {
        steps,
        decision,
        refused_here,
        dest,
    } = judge(state, &plan, caller, original);
    let (verdict, mut reason) = verdict_words(&decision);
    if at_waypoint {
        reason = "the waypoint accepts the connection; routes and request policy judge each request (explained per connection only)".to_owned();
    }
    let result = match (&plan, &decision) {
        (Err(_), _) => "the connection is closed at once (no plan)".to_owned(),
        (_, Decision::Deny { .. }) if refused_here => {
            "refused by this agent before it connects; the client sees its connection reset"
                .to_owned()
        }
        (_, Decision::Allow) => "connected".to_owned(),
        (Ok(Plan::Connect(Route::Hbone { .. })), _) => {
            "refused by the destination's agent (HBONE 401); the client sees its connection reset"
                .to_owned()
        }
        _ => "refused by this agent; the client sees its connection reset".to_owned(),
    };
    let (captured, capture_reason) = if src.captured {
        (
            true,
            format!("namespace {} is in the mesh", src.namespace()),
        )
    } else {
        (
            false,
            "not captured: its namespace is not in the mesh, or the pod opts out".to_owned(),
        )
    };
    Ok(Explanation {
        source: source.to_owned(),
        source_identity: identity.to_string(),
        captured,
        capture_reason,
        target: original.to_string(),
        plan: describe(&plan),
        destination: dest.map(|(w, _)| w.key()),
        destination_identity: dest.map(|(w, _)| {
            Identity::new(i.trust_domain, w.namespace(), w.service_account()).to_string()
        }),
        policies: steps,
        verdict,
        reason,
        result,
        request: None,
    })
}

/// The route an HTTP request takes at this node's waypoint, chosen by the
/// waypoint's own route phase (`conn` as the data path builds it for the pod).
pub fn request_route(
    conn: &crate::waypoint::conn::Conn,
    state: &mesh_model::state::State,
    (method, path): (&str, &str),
) -> Result<RequestStep, Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, conn.original.to_string())
        .body(())
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let (parts, ()) = req.into_parts();
    let mut log = crate::waypoint::log::RequestLog::default();
    let request = format!("{method} {path}");
    Ok(
        match crate::waypoint::phases::route::select(conn, state, &parts, false, &mut log) {
            Ok(routed) => RequestStep {
                request,
                route: Some(log.route.clone()),
                backends: routed
                    .rule
                    .backends
                    .iter()
                    .map(|b| {
                        format!(
                            "{}:{} weight {}",
                            b.backend.service, b.backend.port, b.weight
                        )
                    })
                    .collect(),
                local_reply: None,
            },
            Err(reply) => RequestStep {
                request,
                route: None,
                backends: Vec::new(),
                local_reply: Some(format!("{} {}", reply.status.as_u16(), reply.flag.as_str())),
            },
        },
    )
}

/// The pod's address of the destination's family (the caller's address policy sees).
fn family_address(w: &WorkloadInfo, like: IpAddr) -> IpAddr {
    w.addresses()
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == like.is_ipv4())
        .unwrap_or(like)
}

#[cfg(test)]
mod tests;
