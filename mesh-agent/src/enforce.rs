//! The one place AuthorizationPolicy is enforced. L4 connections (plaintext inbound,
//! HBONE streams, same-node delivery, connections to a Service with attached
//! policy) and L7 requests ask `authz::authorize` over the compiled policies; here
//! the verdict is logged (AUDIT and dry-run included, for L4 and L7), counted and
//! turned into a refusal.
use std::net::{IpAddr, SocketAddr};

use mesh_model::{
    authz::{self, Decision, Policy, Verdict},
    denial::{Denial, Layer},
    identity::Identity,
    model::Action,
    state::{ServiceInfo, WorkloadInfo},
};

pub use mesh_model::authz::Judging;

use crate::{
    datapath::Inputs,
    local::Pod,
    telemetry::{ConnectionLabels, DryRunLabels, Telemetry},
};

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
    /// The DENY policy that refused, if one did.
    fn policy(&self) -> Option<String> {
        match self {
            Denied::Policy(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn from_decision(d: Decision) -> Option<Denied> {
        match d {
            Decision::Allow => None,
            Decision::Deny { policy } if policy.is_empty() => Some(Denied::NoAllowMatch),
            Decision::Deny { policy } => Some(Denied::Policy(policy)),
        }
    }
}

/// Keeps a refusal among the agent's recent ones (`meshctl denials`).
fn remember(
    inputs: &Inputs,
    (layer, request): (Layer, Option<String>),
    caller: Caller<'_>,
    destination: String,
    target: SocketAddr,
    denied: &Denied,
) {
    inputs.telemetry.denials.record(Denial {
        unix_ms: crate::telemetry::denials::now_ms(),
        layer,
        source: caller.describe(),
        destination,
        target: target.to_string(),
        request: request.map(crate::telemetry::denials::bounded),
        policy: denied.policy(),
        reason: denied.to_string(),
    });
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

pub fn connection_verdict<'p>(
    policies: impl IntoIterator<Item = &'p Policy> + Clone,
    caller: Caller<'_>,
    target: SocketAddr,
    judging: Judging,
) -> Verdict {
    authz::authorize(
        policies,
        &authz::Connection {
            source: caller.identity,
            source_ip: caller.ip,
            destination_ip: target.ip(),
            destination_port: target.port(),
            l7: judging.l7(),
        },
    )
}

/// The L4 verdict for one connection to `target` of `pod`, under the state in force.
fn verdict(
    inputs: &Inputs,
    pod: &Pod,
    caller: Caller<'_>,
    target: SocketAddr,
    judging: Judging,
) -> Result<Verdict, Denied> {
    let state = inputs.state.load();
    let w = pod
        .addresses
        .first()
        .and_then(|a| state.workloads_by_ip.get(a))
        .ok_or(Denied::UnknownDestination)?;
    let policies = w.policies.iter().map(AsRef::as_ref);
    Ok(connection_verdict(policies, caller, target, judging))
}

/// Logs what dry-run policies would have done, and counts it.
fn report_dry_run(
    telemetry: &Telemetry,
    v: &Verdict,
    layer: &'static str,
    what: &dyn Fn() -> String,
) {
    for d in &v.dry_run {
        let result = if d.would_allow {
            "would_allow"
        } else {
            "would_deny"
        };
        let policy_action = if d.action == Action::Deny {
            "DENY"
        } else {
            "ALLOW"
        };
        let policy = d.policy.as_deref().unwrap_or("-");
        tracing::info!(target: "audit", layer, policy_action, policy, "dry run: {result}: {}", what());
        let labels = DryRunLabels {
            layer,
            policy_action,
            result,
        };
        telemetry.dry_run.get_or_create(&labels).inc();
    }
}

/// Whether the connection is allowed now: the same decision as `connection`,
/// without its logs and counters (for re-checks of established connections).
pub fn allowed(
    inputs: &Inputs,
    pod: &Pod,
    caller: Caller<'_>,
    target: SocketAddr,
    judging: Judging,
) -> Result<(), Denied> {
    let v = verdict(inputs, pod, caller, target, judging)?;
    Denied::from_decision(v.decision).map_or(Ok(()), Err)
}

/// Logs, counts and turns an L4 verdict into a refusal.
fn enforce_connection(
    inputs: &Inputs,
    verdict: Verdict,
    caller: Caller<'_>,
    destination: &dyn std::fmt::Display,
    destination_identity: Option<&Identity>,
    target: SocketAddr,
) -> Result<(), Denied> {
    let port = target.port();
    for p in &verdict.audited {
        tracing::info!(target: "audit", source = %caller.describe(), %destination, port, policy = %p, "audited connection");
    }
    let what = || {
        format!(
            "connection from {} to {destination} port {port}",
            caller.describe()
        )
    };
    report_dry_run(&inputs.telemetry, &verdict, "l4", &what);
    let Some(denied) = Denied::from_decision(verdict.decision) else {
        return Ok(());
    };
    tracing::warn!(source = %caller.describe(), %destination, port, "connection refused: {denied}");
    let labels = ConnectionLabels::new(
        "inbound",
        "-",
        caller.identity,
        destination_identity,
        "DENIED",
    );
    inputs.telemetry.refused.get_or_create(&labels).inc();
    Err(denied)
}

/// L4 policy of an enrolled destination pod for one connection to `target`.
pub fn connection(
    inputs: &Inputs,
    pod: &Pod,
    caller: Caller<'_>,
    target: SocketAddr,
    judging: Judging,
) -> Result<(), Denied> {
    let result = match verdict(inputs, pod, caller, target, judging) {
        Ok(v) => enforce_connection(
            inputs,
            v,
            caller,
            &pod.identity,
            Some(&pod.identity),
            target,
        ),
        Err(denied) => {
            tracing::warn!(source = %caller.describe(), destination = %pod.identity, port = target.port(), "connection refused: {denied}");
            Err(denied)
        }
    };
    if let Err(denied) = &result {
        remember(
            inputs,
            (Layer::L4, None),
            caller,
            pod.key.clone(),
            target,
            denied,
        );
    }
    result
}

/// The policies attached to a Service (`targetRefs`) for one connection addressed
/// to it (`original`, its VIP and port), checked where the connection leaves.
pub fn service_connection(
    inputs: &Inputs,
    service: &ServiceInfo,
    caller: Caller<'_>,
    original: SocketAddr,
    judging: Judging,
) -> Result<(), Denied> {
    if service.policies.is_empty() {
        return Ok(());
    }
    let policies = service.policies.iter().map(AsRef::as_ref);
    let v = connection_verdict(policies, caller, original, judging);
    let destination = format!("service {}", service.key());
    let result = enforce_connection(inputs, v, caller, &destination, None, original);
    if let Err(denied) = &result {
        remember(
            inputs,
            (Layer::L4, None),
            caller,
            destination,
            original,
            denied,
        );
    }
    result
}

/// One HTTP request to `destination` (an address of `target`) under `policies`
/// (a workload's, or a Service's attached ones), with the request's attributes.
pub fn request<'p>(
    inputs: &Inputs,
    policies: impl IntoIterator<Item = &'p Policy> + Clone,
    target: &dyn std::fmt::Display,
    caller: Caller<'_>,
    destination: SocketAddr,
    request: &authz::Request<'_>,
) -> Result<(), Denied> {
    let verdict = authz::authorize(
        policies,
        &authz::Connection {
            source: caller.identity,
            source_ip: caller.ip,
            destination_ip: destination.ip(),
            destination_port: destination.port(),
            l7: authz::L7::Request(request),
        },
    );
    let (method, path) = (request.method, request.path);
    for p in &verdict.audited {
        tracing::info!(target: "audit", source = %caller.describe(), destination = %target, method, path, policy = %p, "audited request");
    }
    let what = || format!("{method} {path} from {} to {target}", caller.describe());
    report_dry_run(&inputs.telemetry, &verdict, "l7", &what);
    let Some(denied) = Denied::from_decision(verdict.decision) else {
        return Ok(());
    };
    tracing::warn!(source = %caller.describe(), destination = %target, method, path, "request denied: {denied}");
    let what = (Layer::L7, Some(format!("{method} {path}")));
    remember(
        inputs,
        what,
        caller,
        target.to_string(),
        destination,
        &denied,
    );
    Err(denied)
}

/// `request` over a workload's own policies.
pub fn workload_request(
    inputs: &Inputs,
    target: &WorkloadInfo,
    caller: Caller<'_>,
    destination: SocketAddr,
    r: &authz::Request<'_>,
) -> Result<(), Denied> {
    let policies = target.policies.iter().map(AsRef::as_ref);
    request(inputs, policies, &target.key(), caller, destination, r)
}
