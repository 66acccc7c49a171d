//! What the admin API answers, as types: the server serializes them, meshctl
//! deserializes them.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use crate::distribution::NodeStatus;

/// `/v1/status`: the config version and every node agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: u64,
    /// When the control plane saw the change that made this version (Unix ms).
    pub seen_unix_ms: u64,
    pub nodes: BTreeMap<String, NodeStatus>,
}

/// `/v1/problems`: objects of the config in force that are refused, not attached
/// or enforced fail-closed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problems {
    pub version: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// `Kind namespace/name`
    pub object: String,
    pub problem: String,
}

/// `/v1/routes`: each HTTPRoute's and GRPCRoute's Gateway API conditions per
/// parent (what the control plane writes to `status` in a cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub version: u64,
    pub routes: Vec<mesh_model::l7::status::RouteStatus>,
}

/// One object a node receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub object: serde_json::Value,
}

/// `/v1/config/<node>`: what that node's agent receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub version: u64,
    pub node: String,
    pub objects: Vec<ConfigObject>,
}

/// An AuthorizationPolicy that applies to a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    pub action: String,
    /// Has rules only a waypoint can judge.
    pub l7: bool,
}

/// `/v1/check/<namespace>/<pod>`: why a pod is (not) in the mesh and what applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub pod: String,
    pub node: String,
    pub captured: bool,
    pub reason: String,
    pub identity: String,
    pub addresses: Vec<IpAddr>,
    pub services: Vec<String>,
    pub authorization_policies: Vec<PolicyRef>,
    pub routes: Vec<String>,
    /// Its traffic is served by the waypoint.
    pub l7: bool,
}

/// Any error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
