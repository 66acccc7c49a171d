//! Istio's standard metrics' label sets, with Istio's values: who the source and
//! the destination are (workload, namespace, principal, app, version, canonical
//! service and revision, cluster), what reported it and how it was secured. The
//! values come from the mesh's own workload records, never from what a client
//! says, and never include client addresses: every label has one value per
//! workload or service the config knows, or `unknown`.
use std::net::IpAddr;

use mesh_model::{
    identity::Identity,
    model::Labels,
    state::{ServiceInfo, State, WorkloadInfo},
};
use prometheus_client::encoding::EncodeLabelSet;

pub const UNKNOWN: &str = "unknown";

/// Istio's default cluster name (its `--clusterID` when none is set).
pub const DEFAULT_CLUSTER: &str = "Kubernetes";

/// One side of a connection or request, as Istio's labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl Peer {
    pub fn unknown() -> Peer {
        Peer {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
        }
    }

    /// The side at `ip` whose identity is `identity` (proven by mTLS, or the
    /// agent's own pod's). The workload's labels are taken only when the workload
    /// at `ip` has that identity: an address alone never lends a peer another
    /// workload's name; a side known only by its identity gets its namespace and
    /// principal.
    pub fn of(state: &State, ip: Option<IpAddr>, identity: Option<&Identity>) -> Peer {
        let w = ip.and_then(|ip| state.workloads_by_ip.get(&ip.to_canonical()));
        match (w, identity) {
            (Some(w), Some(id)) if same_identity(w, id) => Peer::from_workload(w, id),
            (_, Some(id)) => Peer {
                namespace: id.namespace.clone(),
                principal: id.to_string(),
                ..Peer::unknown()
            },
            (_, None) => Peer::unknown(),
        }
    }

    fn from_workload(w: &WorkloadInfo, id: &Identity) -> Peer {
        let labels = w.labels();
        let workload = workload_name(w.name(), labels);
        Peer {
            namespace: w.namespace().to_owned(),
            principal: id.to_string(),
            app: label(labels, "app"),
            version: label(labels, "version"),
            canonical_service: canonical_service(labels, &workload),
            canonical_revision: canonical_revision(labels),
            workload,
        }
    }
}

fn same_identity(w: &WorkloadInfo, id: &Identity) -> bool {
    w.namespace() == id.namespace && w.service_account() == id.service_account
}

fn label(labels: &Labels, key: &str) -> String {
    labels.get(key).cloned().unwrap_or_else(|| UNKNOWN.into())
}

/// The workload a pod belongs to, as Istio names it: a Deployment's pod
/// `reviews-v1-5fd6d4f8f8-knbht` (label `pod-template-hash: 5fd6d4f8f8`) is
/// workload `reviews-v1`; any other pod is its own workload.
pub fn workload_name(pod: &str, labels: &Labels) -> String {
    if let Some(hash) = labels.get("pod-template-hash") {
        let marker = format!("-{hash}-");
        if let Some(at) = pod.rfind(&marker) {
            if at > 0 {
                return pod[..at].to_owned();
            }
        }
    }
    pod.to_owned()
}

/// Istio's canonical service: the label `service.istio.io/canonical-name`, else
/// `app.kubernetes.io/name`, else `app`, else the workload's name.
pub fn canonical_service(labels: &Labels, workload: &str) -> String {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| labels.get(k).cloned())
    .unwrap_or_else(|| workload.to_owned())
}

/// Istio's canonical revision: `service.istio.io/canonical-revision`, else
/// `app.kubernetes.io/version`, else `version`, else `latest`.
pub fn canonical_revision(labels: &Labels) -> String {
    [
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|k| labels.get(k).cloned())
    .unwrap_or_else(|| "latest".into())
}

/// The destination Service as Istio's three labels name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceName {
    pub fqdn: String,
    pub name: String,
    pub namespace: String,
}

impl ServiceName {
    pub fn unknown() -> ServiceName {
        ServiceName {
            fqdn: UNKNOWN.into(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        }
    }

    pub fn of(svc: &ServiceInfo) -> ServiceName {
        let (name, namespace) = (svc.name(), svc.namespace());
        ServiceName {
            fqdn: format!("{name}.{namespace}.svc.cluster.local"),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// The Service with this `namespace/name` key (what the waypoint's route
    /// records), if the config has one: a pod or Gateway named there is none.
    pub fn of_key(state: &State, key: &str) -> ServiceName {
        state
            .services_by_key
            .get(key)
            .map(|s| ServiceName::of(s))
            .unwrap_or_else(ServiceName::unknown)
    }
}

/// Who reported a metric, in Istio's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// The source's node (outbound).
    Source,
    /// The destination's node (inbound).
    Destination,
    /// An L7 waypoint.
    Waypoint,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

/// Istio's `connection_security_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    MutualTls,
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
        }
    }
}

/// The labels Istio's TCP and request metrics share.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_cluster: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_cluster: String,
    /// "tcp", "http" or "grpc".
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// What a traffic metric's labels are made of.
pub struct Traffic<'a> {
    pub reporter: Reporter,
    pub source: &'a Peer,
    pub destination: &'a Peer,
    pub service: &'a ServiceName,
    pub cluster: &'a str,
    pub protocol: &'static str,
    pub flags: &'static str,
    pub security: Security,
}

impl Traffic<'_> {
    pub fn labels(&self) -> TrafficLabels {
        let (s, d) = (self.source, self.destination);
        TrafficLabels {
            reporter: self.reporter.as_str(),
            source_workload: s.workload.clone(),
            source_workload_namespace: s.namespace.clone(),
            source_principal: s.principal.clone(),
            source_app: s.app.clone(),
            source_version: s.version.clone(),
            source_canonical_service: s.canonical_service.clone(),
            source_canonical_revision: s.canonical_revision.clone(),
            source_cluster: self.cluster.to_owned(),
            destination_workload: d.workload.clone(),
            destination_workload_namespace: d.namespace.clone(),
            destination_principal: d.principal.clone(),
            destination_app: d.app.clone(),
            destination_version: d.version.clone(),
            destination_service: self.service.fqdn.clone(),
            destination_service_name: self.service.name.clone(),
            destination_service_namespace: self.service.namespace.clone(),
            destination_canonical_service: d.canonical_service.clone(),
            destination_canonical_revision: d.canonical_revision.clone(),
            destination_cluster: self.cluster.to_owned(),
            request_protocol: self.protocol,
            response_flags: self.flags,
            connection_security_policy: self.security.as_str(),
        }
    }
}

/// Labels of Istio's request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub traffic: TrafficLabels,
    pub response_code: u16,
    pub grpc_response_status: String,
}

#[cfg(test)]
mod tests;
