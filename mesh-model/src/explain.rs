//! The decision trail for one connection a pod would make (`meshctl explain`),
//! as the node agent computes it with its data path's own plan and authorize
//! functions.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// `namespace/pod`.
    pub source: String,
    pub source_identity: String,
    /// Whether the pod's connections are captured, and why (not).
    pub captured: bool,
    pub capture_reason: String,
    /// The address asked for.
    pub target: String,
    /// How the connection leaves the pod (same node, HBONE, waypoint, passthrough).
    pub plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_identity: Option<String>,
    /// Each AuthorizationPolicy considered, in order: the Service's (targetRefs),
    /// then the destination workload's.
    pub policies: Vec<PolicyStep>,
    /// `allow` or `deny`.
    pub verdict: String,
    pub reason: String,
    /// What the client would see.
    pub result: String,
    /// For an HTTP request (`--http METHOD PATH`) the waypoint serves: the route
    /// it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStep {
    /// `METHOD path`.
    pub request: String,
    /// `HTTPRoute ns/name/rule`, or the Service's implicit route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `namespace/name:port weight N` per backend of the rule.
    pub backends: Vec<String>,
    /// The waypoint's own answer when no route takes it (status and flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_reply: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStep {
    /// `namespace/name`.
    pub policy: String,
    /// Attached to the Service, or selecting the destination workload.
    pub attached_to: String,
    pub action: String,
    pub dry_run: bool,
    /// Whether one of its rules matches this connection.
    pub matches: bool,
}
