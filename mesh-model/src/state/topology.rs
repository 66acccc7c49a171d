//! Workloads and Services as the data path needs them, each carrying what applies to
//! it (policies, STRICT, L7 handling, shared waypoint), and the indexes that make
//! every lookup O(1): by address, by VIP, by key. Service selectors are resolved
//! through a label index, not by scanning every workload.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use super::policy::{PeerMtls, Policies};
use crate::{
    authz::Policy,
    l7::table::Table,
    model::{self, Labels, Objects, DATAPLANE_MODE_LABEL, MODE_AMBIENT, MODE_NONE},
};

/// Label on a Service (or its Namespace) naming the Workload that is its shared
/// waypoint (`mesh-agent waypoint --hbone`), as Istio's `istio.io/use-waypoint`.
pub const USE_WAYPOINT_LABEL: &str = "ferrymesh.io/use-waypoint";

/// `appProtocol` values that make a Service port HTTP (handled by the waypoint).
pub const HTTP_APP_PROTOCOLS: [&str; 6] = [
    "http",
    "http2",
    "grpc",
    "kubernetes.io/h2c",
    "h2c",
    "kubernetes.io/http",
];

/// A workload as the data path needs it: the object (shared with the config, not
/// copied) and what applies to it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadInfo {
    pub object: Arc<model::Workload>,
    /// The workload's traffic goes through the mesh (namespace label, no pod opt-out).
    pub captured: bool,
    /// The AuthorizationPolicies that apply to it.
    pub policies: Vec<Arc<Policy>>,
    /// Its effective PeerAuthentication: where plaintext inbound is refused.
    pub mtls: PeerMtls,
    /// It has policy only a waypoint can enforce (L7 rules, RequestAuthentication).
    pub l7: bool,
}

impl WorkloadInfo {
    pub fn name(&self) -> &str {
        &self.object.metadata.name
    }
    pub fn namespace(&self) -> &str {
        self.object.metadata.namespace()
    }
    pub fn service_account(&self) -> &str {
        &self.object.spec.service_account
    }
    /// The node it runs on.
    pub fn node(&self) -> &str {
        &self.object.spec.node
    }
    pub fn addresses(&self) -> &[IpAddr] {
        &self.object.spec.addresses
    }
    pub fn netns(&self) -> Option<&PathBuf> {
        self.object.spec.netns.as_ref()
    }
    pub fn labels(&self) -> &Labels {
        &self.object.metadata.labels
    }
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addresses().iter().copied().find(IpAddr::is_ipv4)
    }
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addresses().iter().copied().find(IpAddr::is_ipv6)
    }
    /// Its address of the same family as `like`.
    pub fn address_like(&self, like: &IpAddr) -> Option<IpAddr> {
        if like.is_ipv4() {
            self.ipv4()
        } else {
            self.ipv6()
        }
    }
}

#[derive(Debug)]
pub struct ServicePortInfo {
    pub port: u16,
    pub target_port: u16,
    pub app_protocol: Option<String>,
    /// Endpoint workloads, in a stable order.
    pub endpoints: Vec<Arc<WorkloadInfo>>,
    /// Connections to this port are served by the waypoint (HTTP appProtocol, a
    /// route or route-side TrafficPolicy, or an endpoint with L7 policy).
    pub l7: bool,
    pub next: AtomicUsize,
}

#[derive(Debug)]
pub struct ServiceInfo {
    /// The Service (shared with the config, not copied).
    pub object: Arc<model::Service>,
    pub ports: Vec<ServicePortInfo>,
    /// The shared waypoint its traffic goes through (`ferrymesh.io/use-waypoint`).
    pub waypoint: Option<Arc<WorkloadInfo>>,
    /// AuthorizationPolicies attached to it by `targetRefs`: judged for
    /// connections and requests addressed to it.
    pub policies: Vec<Arc<Policy>>,
}

impl ServiceInfo {
    pub fn name(&self) -> &str {
        &self.object.metadata.name
    }
    pub fn namespace(&self) -> &str {
        self.object.metadata.namespace()
    }
    pub fn labels(&self) -> &Labels {
        &self.object.metadata.labels
    }
    /// Its cluster IPs.
    pub fn vips(&self) -> &[IpAddr] {
        &self.object.spec.cluster_ips
    }
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub labels: Labels,
    /// Labelled `ferrymesh.io/dataplane-mode: ambient`.
    pub ambient: bool,
}

/// The compiled topology (see `State`).
#[derive(Default)]
pub struct Topology {
    pub workloads: Vec<Arc<WorkloadInfo>>,
    pub workloads_by_ip: HashMap<IpAddr, Arc<WorkloadInfo>>,
    pub services_by_vip: HashMap<IpAddr, Arc<ServiceInfo>>,
    pub services_by_key: HashMap<String, Arc<ServiceInfo>>,
    pub namespaces: HashMap<String, NamespaceInfo>,
}

fn workload(
    w: &Arc<model::Workload>,
    namespaces: &HashMap<String, NamespaceInfo>,
    policies: &Policies,
    l7: &Table,
) -> WorkloadInfo {
    let ns = w.metadata.namespace();
    let labels = &w.metadata.labels;
    let opted_out = labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) == Some(MODE_NONE);
    let applying = policies.for_workload(ns, labels);
    let l7_policy =
        applying.iter().any(|p| p.has_l7()) || l7.jwt.iter().any(|j| j.applies(ns, labels));
    WorkloadInfo {
        object: w.clone(),
        captured: namespaces.get(ns).is_some_and(|n| n.ambient) && !opted_out,
        mtls: policies.peer_mtls(ns, labels),
        policies: applying,
        l7: l7_policy,
    }
}

/// Workloads by (namespace, label key, label value): a selector's candidates.
struct LabelIndex<'a>(HashMap<(&'a str, &'a str, &'a str), Vec<usize>>);

impl<'a> LabelIndex<'a> {
    fn new(workloads: &'a [Arc<WorkloadInfo>]) -> LabelIndex<'a> {
        let mut m: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            for (k, v) in w.labels() {
                m.entry((w.namespace(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        LabelIndex(m)
    }

    /// Workloads of `namespace` whose labels hold all of `selector`, in order.
    fn select(
        &self,
        workloads: &[Arc<WorkloadInfo>],
        namespace: &str,
        selector: &Labels,
    ) -> Vec<Arc<WorkloadInfo>> {
        let lists: Option<Vec<&Vec<usize>>> = selector
            .iter()
            .map(|(k, v)| self.0.get(&(namespace, k.as_str(), v.as_str())))
            .collect();
        let Some(shortest) = lists.and_then(|l| l.into_iter().min_by_key(|l| l.len())) else {
            return Vec::new();
        };
        shortest
            .iter()
            .map(|&i| &workloads[i])
            .filter(|w| w.labels().selected_by(selector))
            .cloned()
            .collect()
    }
}

fn namespaces(o: &Objects) -> HashMap<String, NamespaceInfo> {
    o.namespaces
        .iter()
        .map(|n| {
            let labels = n.metadata.labels.clone();
            let ambient =
                labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) == Some(MODE_AMBIENT);
            (n.metadata.name.clone(), NamespaceInfo { labels, ambient })
        })
        .collect()
}

impl Topology {
    pub fn build(o: &Objects, policies: &Policies, l7: &Table) -> Topology {
        let namespaces = namespaces(o);
        let workloads: Vec<Arc<WorkloadInfo>> = o
            .workloads
            .iter()
            .map(|w| Arc::new(workload(w, &namespaces, policies, l7)))
            .collect();
        let workloads_by_ip = workloads
            .iter()
            .flat_map(|w| w.addresses().iter().map(move |a| (*a, w.clone())))
            .collect();
        let by_name: HashMap<(&str, &str), &Arc<WorkloadInfo>> = workloads
            .iter()
            .map(|w| ((w.namespace(), w.name()), w))
            .collect();
        let index = LabelIndex::new(&workloads);
        let mut t = Topology {
            workloads_by_ip,
            ..Topology::default()
        };
        for s in &o.services {
            let ns = s.metadata.namespace();
            let endpoints = if s.spec.selector.is_empty() {
                Vec::new()
            } else {
                index.select(&workloads, ns, &s.spec.selector)
            };
            let waypoint = s
                .metadata
                .labels
                .get(USE_WAYPOINT_LABEL)
                .or_else(|| {
                    namespaces
                        .get(ns)
                        .and_then(|n| n.labels.get(USE_WAYPOINT_LABEL))
                })
                .filter(|name| *name != "none")
                .and_then(|name| by_name.get(&(ns, name.as_str())).map(|w| (*w).clone()));
            let attached = policies.for_service(ns, &s.metadata.name);
            let info = Arc::new(service(s, endpoints, waypoint, l7, attached));
            for vip in info.vips() {
                t.services_by_vip.insert(*vip, info.clone());
            }
            t.services_by_key.insert(info.key(), info);
        }
        t.workloads = workloads;
        t.namespaces = namespaces;
        t
    }
}

fn service(
    s: &Arc<model::Service>,
    endpoints: Vec<Arc<WorkloadInfo>>,
    waypoint: Option<Arc<WorkloadInfo>>,
    l7: &Table,
    policies: Vec<Arc<Policy>>,
) -> ServiceInfo {
    let ns = s.metadata.namespace();
    let key = format!("{ns}/{}", s.metadata.name);
    // Requests are judged at the waypoint for an endpoint's L7 policy or the
    // Service's own (`targetRefs`).
    let endpoint_l7 = endpoints.iter().any(|w| w.l7) || policies.iter().any(|p| p.has_l7());
    let ports = s
        .spec
        .ports
        .iter()
        .map(|p| {
            let by_protocol = p
                .app_protocol
                .as_deref()
                .is_some_and(|a| HTTP_APP_PROTOCOLS.contains(&a));
            ServicePortInfo {
                port: p.port,
                target_port: p.target_port.unwrap_or(p.port),
                app_protocol: p.app_protocol.clone(),
                endpoints: endpoints.clone(),
                l7: by_protocol || l7.service_has_l7(&key, p.port) || endpoint_l7,
                next: AtomicUsize::new(0),
            }
        })
        .collect();
    ServiceInfo {
        object: s.clone(),
        ports,
        waypoint,
        policies,
    }
}

impl ServicePortInfo {
    /// Round robin over the endpoints that have an address of `family_of`'s family.
    pub fn pick(&self, family_of: &SocketAddr) -> Option<SocketAddr> {
        let candidates: Vec<IpAddr> = self
            .endpoints
            .iter()
            .filter_map(|w| w.address_like(&family_of.ip()))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Some(SocketAddr::new(candidates[i], self.target_port))
    }
}
