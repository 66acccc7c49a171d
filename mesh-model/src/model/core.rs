//! The cluster's shape: Nodes, Namespaces, Workloads (pods) and Services.
use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{interned::Interned, labels::Labels, meta::ObjectMeta};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub spec: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// A pod (or VM) the mesh knows: where it runs, who it is, where its netns is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    pub spec: WorkloadSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Name of the node the workload runs on.
    pub node: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Pod addresses: at most one IPv4 and one IPv6.
    pub addresses: Vec<IpAddr>,
    /// Path of the pod's network namespace file (e.g. /run/netns/NAME). Required for
    /// workloads on the agent's own node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Virtual IPs (Kubernetes `clusterIPs`).
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<IpAddr>,
    /// Workloads (by label) that back the service.
    #[serde(default)]
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// Port on the workload; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn default_protocol() -> String {
    "TCP".to_owned()
}

/// Istio's default root namespace: policies there apply to the whole mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Mesh-wide settings (the part of Istio's MeshConfig that policy needs). At most
/// one per config; in a cluster the control plane makes it from its flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: MeshConfigSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    /// Policies (AuthorizationPolicy, PeerAuthentication, RequestAuthentication) in
    /// this namespace apply to every workload of the mesh.
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
}

fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_owned()
}

impl Default for MeshConfigSpec {
    fn default() -> Self {
        MeshConfigSpec {
            root_namespace: default_root_namespace(),
        }
    }
}

impl MeshConfig {
    /// The settings object a control plane sends for `root_namespace`.
    pub fn new(root_namespace: &str) -> MeshConfig {
        MeshConfig {
            api_version: "ferrymesh.io/v1alpha1".into(),
            kind: "MeshConfig".into(),
            metadata: ObjectMeta {
                name: "mesh".into(),
                ..ObjectMeta::default()
            },
            spec: MeshConfigSpec {
                root_namespace: root_namespace.to_owned(),
            },
        }
    }
}
