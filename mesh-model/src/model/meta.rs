//! What every object has: metadata, the type header, label selectors; and the
//! labels and API kinds the mesh knows.
use serde::{Deserialize, Serialize};

use super::labels::Labels;

/// Label that puts a namespace into the mesh (`ambient`) or a pod out of it (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "ferrymesh.io/dataplane-mode";
pub const MODE_AMBIENT: &str = "ambient";
pub const MODE_NONE: &str = "none";

/// A Kubernetes API kind: group, version, kind and its plural resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

const fn api(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> ApiKind {
    ApiKind {
        group,
        version,
        kind,
        plural,
    }
}

const GATEWAY: &str = "gateway.networking.k8s.io";
const ISTIO_SECURITY: &str = "security.istio.io";
const FERRYMESH: &str = "ferrymesh.io";

/// The custom resources the control plane watches (the Gateway API's CRDs come
/// from the Gateway API project; the others are in deploy/chart/ferrymesh/crds).
pub const CUSTOM_KINDS: [ApiKind; 8] = [
    api(GATEWAY, "v1", "HTTPRoute", "httproutes"),
    api(GATEWAY, "v1beta1", "ReferenceGrant", "referencegrants"),
    api(GATEWAY, "v1", "GRPCRoute", "grpcroutes"),
    api(
        ISTIO_SECURITY,
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    api(
        ISTIO_SECURITY,
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    api(
        ISTIO_SECURITY,
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    api(FERRYMESH, "v1alpha1", "TrafficPolicy", "trafficpolicies"),
    api(FERRYMESH, "v1alpha1", "DirectResponse", "directresponses"),
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
    /// RFC 3339, as the API server sets it: the oldest of equal PeerAuthentications
    /// wins. Absent in files (then the name decides).
    #[serde(
        default,
        rename = "creationTimestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_timestamp: Option<String>,
    /// The API server's count of spec changes (routes only): route conditions
    /// carry it as `observedGeneration`. Absent in files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl ObjectMeta {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// Istio's `istio.io/dry-run` annotation, read as Go's `strconv.ParseBool` reads
    /// it (Istio's reading): a value that does not parse means enforced.
    pub fn dry_run(&self) -> bool {
        self.true_annotation(DRY_RUN_ANNOTATION)
    }

    /// `ferrymesh.io/fast-path: "true"` on a pod: its loopback hops to the agent
    /// may take the sockmap fast path (for applications reading with
    /// non-blocking sockets; see the agent's `--fast-path`).
    pub fn fast_path(&self) -> bool {
        self.true_annotation(FAST_PATH_ANNOTATION)
    }

    /// An annotation read as Go's `strconv.ParseBool` reads "true"; anything else
    /// is false.
    fn true_annotation(&self, key: &str) -> bool {
        matches!(
            self.annotations.get(key).map(String::as_str),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True")
        )
    }
}

/// Pod annotation opting its loopback hops into the sockmap fast path.
pub const FAST_PATH_ANNOTATION: &str = "ferrymesh.io/fast-path";

/// Annotation that makes an AuthorizationPolicy evaluated, logged and counted,
/// never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Only `apiVersion` and `kind`, read first to pick the type of a document.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    pub api_version: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
}
