//! Istio's security policies: AuthorizationPolicy and PeerAuthentication.
//!
//! Fields ferrymesh does not implement are still read (Istio's are named; any other
//! lands in `unknown`), never dropped: a dropped field would widen access. What the
//! compiled policy does with them is fail-closed (`authz::compile`, `state::policy`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields of a policy object ferrymesh does not know, kept to be refused
/// explicitly. Not in the CRD schema (the API server keeps Istio's named fields).
pub type Unknown = BTreeMap<String, serde_json::Value>;

use super::{
    interned::Interned,
    meta::{LabelSelector, ObjectMeta},
};

/// Istio's `security.istio.io/v1` AuthorizationPolicy, the L4 part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workloads in the policy's namespace it applies to; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The Services or Gateways (of the policy's namespace) it is attached to,
    /// instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<AuthzTargetRef>,
    /// The single, deprecated form of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<AuthzTargetRef>,
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy (not supported: see README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub provider: Option<serde_json::Value>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

/// What a policy is attached to (Istio's `AuthzTargetReference`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzTargetRef {
    /// `""` (core) for a Service, `gateway.networking.k8s.io` for a Gateway.
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Must be absent: cross-namespace references are refused, as Istio does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    // Delegated to an external authorizer: not supported, enforced as DENY for
    // what its rules match (fail closed, never dropped). (Not a doc comment: it
    // would make the CRD schema a oneOf.)
    Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    /// L7 conditions: `request.headers[name]`, `request.auth.claims[name]`,
    /// `request.auth.principal`, `source.principal`, `source.namespace`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub source: Source,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// JWT `iss/sub` (L7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// The client's address as the first hop saw it (L7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// `serviceAccount` (of the policy's namespace) or `namespace/serviceAccount`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    pub operation: Operation,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// L7 fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

/// Istio's PeerAuthentication: `STRICT` refuses plaintext inbound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    pub api_version: Interned,
    pub kind: Interned,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub mtls: Mtls,
    /// Per-port modes (of a workload policy), by the workload's port number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, Mtls>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    #[serde(default)]
    pub mode: MtlsMode,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: Unknown,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    #[default]
    Permissive,
    Strict,
    // UNSET: inherit the parent's mode; DISABLE: plaintext allowed, as PERMISSIVE
    // (ambient enforces STRICT only).
    Unset,
    Disable,
}
