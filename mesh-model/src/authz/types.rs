//! What a decision is asked about and what it answers.
use std::net::IpAddr;

use crate::{
    identity::Identity,
    model::{Action, Labels},
};

/// Label Istio (and ferrymesh) put on a Gateway's workloads: a policy whose
/// `targetRefs` names the Gateway applies to them.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// What the destination agent knows of a connection.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// None for plaintext (no peer certificate).
    pub source: Option<&'a Identity>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub l7: L7<'a>,
}

/// What is known above L4, and so how rules with HTTP attributes count.
#[derive(Debug, Clone, Copy)]
pub enum L7<'a> {
    /// A request: every field is judged.
    Request(&'a Request<'a>),
    /// A connection whose requests are judged one by one after this check (this
    /// agent's L7 at the destination, the waypoint that made it): an ALLOW rule
    /// counts on its L4 fields (the requests are judged in full later), DENY and
    /// AUDIT rules with HTTP attributes are left to the requests.
    PerRequest,
    /// Only this L4 check decides (ztunnel's rule): an ALLOW or AUDIT rule with
    /// HTTP attributes matches nothing; a DENY rule matches on its L4 fields.
    None,
}

/// Whether the requests of a connection are judged after its L4 check (what the
/// L4 check then passes as `L7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judging {
    /// L7 serves it (this agent at the destination, or the waypoint that made
    /// it): rules with HTTP attributes are left to the requests.
    PerRequest,
    /// Nothing judges requests: ztunnel's rule.
    L4Only,
}

impl Judging {
    pub fn l7(self) -> L7<'static> {
        match self {
            Judging::PerRequest => L7::PerRequest,
            Judging::L4Only => L7::None,
        }
    }
}

/// An HTTP request's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `iss/sub` of a validated JWT.
    pub principal: Option<&'a str>,
    pub claims: Option<&'a serde_json::Value>,
    /// The client's address as the first hop saw it (`remoteIpBlocks`, `remote.ip`).
    pub remote_ip: IpAddr,
}

/// The destination workload.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by a DENY policy, or by no ALLOW policy matching (`policy` empty).
    Deny {
        policy: String,
    },
}

/// What the dry-run (`istio.io/dry-run`) policies of one action would have done,
/// as Envoy's shadow rules report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    pub action: Action,
    pub would_allow: bool,
    /// The dry-run policy that matched, if one did.
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
    /// One per action that has dry-run policies here (DENY first).
    pub dry_run: Vec<DryRun>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}
