//! What one node agent holds, as its admin API's `/node_view` answers and
//! `meshctl agent ...` shows it (as `istioctl ztunnel-config` does for ztunnel).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub config_generation: u64,
    pub workloads: Vec<WorkloadRow>,
    pub services: Vec<ServiceRow>,
    pub policies: Vec<PolicyRow>,
    pub certificates: Vec<CertificateRow>,
    pub connections: Vec<ConnectionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRow {
    /// `namespace/name`.
    pub workload: String,
    pub node: String,
    pub addresses: Vec<String>,
    pub identity: String,
    /// In the mesh (namespace label, no opt-out): HBONE; else plain TCP.
    pub protocol: String,
    /// Has policy only the waypoint can enforce.
    pub l7_policy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// `namespace/name`.
    pub service: String,
    pub vips: Vec<String>,
    /// `port -> targetPort (endpoints)`, with `L7` where the waypoint serves it.
    pub ports: Vec<String>,
    /// Its shared waypoint (`ferrymesh.io/use-waypoint`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// `namespace/name`.
    pub policy: String,
    pub action: String,
    pub dry_run: bool,
    pub rules: usize,
    /// Parts not understood, enforced fail-closed instead.
    pub degraded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRow {
    pub identity: String,
    /// The leaf's serial number (hex); none while the first one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    /// `namespace/name` of a pod enrolled here.
    pub pod: String,
    /// Proxied connections open now.
    pub active: i64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}
