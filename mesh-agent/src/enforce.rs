//! The one place AuthorizationPolicy is enforced. L4 connections (plaintext inbound,
//! HBONE streams, same-node delivery) and L7 requests ask `authz::authorize` over
//! the destination's compiled policies; here the verdict is logged (AUDIT included,
//! for L4 and L7), counted and turned into a refusal.
use std::net::IpAddr;

use mesh_model::{
    authz::{self, Decision},
    identity::Identity,
    state::WorkloadInfo,
};

use crate::{datapath::Inputs, local::Pod, telemetry::ConnectionLabels};

/// Why a connection or request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("denied by policy {0}")]
    Policy(String),
    #[error("no ALLOW policy matches")]
    NoAllowMatch,
    #[error("destination workload is no longer known")]
    UnknownDestination,
}

impl Denied {
    fn from_decision(d: Decision) -> Option<Denied> {
        match d {
            Decision::Allow => None,
            Decision::Deny { policy } if policy.is_empty() => Some(Denied::NoAllowMatch),
            Decision::Deny { policy } => Some(Denied::Policy(policy)),
        }
    }
}

/// Who asks to reach the destination.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// None for plaintext (no peer certificate).
    pub identity: Option<&'a Identity>,
    pub ip: IpAddr,
}

impl Caller<'_> {
    fn describe(&self) -> String {
        self.identity
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("plaintext {}", self.ip))
    }
}

/// The L4 verdict for one connection to `port` of `pod`, under the state in force.
fn verdict(
    inputs: &Inputs,
    pod: &Pod,
    caller: Caller<'_>,
    port: u16,
) -> Result<authz::Verdict, Denied> {
    let state = inputs.state.load();
    let w = pod
        .addresses
        .first()
        .and_then(|a| state.workloads_by_ip.get(a))
        .ok_or(Denied::UnknownDestination)?;
    Ok(authz::authorize(
        w.policies.iter().map(AsRef::as_ref),
        &authz::Connection {
            source: caller.identity,
            source_ip: caller.ip,
            destination_port: port,
            // Mesh sources judged requests in their waypoint.
            l7: if caller.identity.is_some() {
                authz::L7::JudgedAtSource
            } else {
                authz::L7::None
            },
        },
    ))
}

/// Whether the connection is allowed now: the same decision as `connection`,
/// without its logs and counters (for re-checks of established connections).
pub fn allowed(inputs: &Inputs, pod: &Pod, caller: Caller<'_>, port: u16) -> Result<(), Denied> {
    let v = verdict(inputs, pod, caller, port)?;
    Denied::from_decision(v.decision).map_or(Ok(()), Err)
}

/// L4 policy of an enrolled destination pod for one connection to `port`.
pub fn connection(inputs: &Inputs, pod: &Pod, caller: Caller<'_>, port: u16) -> Result<(), Denied> {
    let verdict = match verdict(inputs, pod, caller, port) {
        Ok(v) => v,
        Err(denied) => {
            tracing::warn!(source = %caller.describe(), destination = %pod.identity, port, "connection refused: {denied}");
            return Err(denied);
        }
    };
    for p in &verdict.audited {
        tracing::info!(target: "audit", source = %caller.describe(), destination = %pod.identity, port, policy = %p, "audited connection");
    }
    let Some(denied) = Denied::from_decision(verdict.decision) else {
        return Ok(());
    };
    tracing::warn!(source = %caller.describe(), destination = %pod.identity, port, "connection refused: {denied}");
    let labels = ConnectionLabels::new(
        "inbound",
        "-",
        caller.identity,
        Some(&pod.identity),
        "DENIED",
    );
    inputs.telemetry.refused.get_or_create(&labels).inc();
    Err(denied)
}

/// One HTTP request to `target` (its AuthorizationPolicies with the request's
/// attributes).
pub fn request(
    target: &WorkloadInfo,
    caller: Caller<'_>,
    port: u16,
    request: &authz::Request<'_>,
) -> Result<(), Denied> {
    let verdict = authz::authorize(
        target.policies.iter().map(AsRef::as_ref),
        &authz::Connection {
            source: caller.identity,
            source_ip: caller.ip,
            destination_port: port,
            l7: authz::L7::Request(request),
        },
    );
    let (method, path) = (request.method, request.path);
    for p in &verdict.audited {
        tracing::info!(target: "audit", source = %caller.describe(), destination = %target.key(), method, path, policy = %p, "audited request");
    }
    let Some(denied) = Denied::from_decision(verdict.decision) else {
        return Ok(());
    };
    tracing::warn!(source = %caller.describe(), destination = %target.key(), method, path, "request denied: {denied}");
    Err(denied)
}
