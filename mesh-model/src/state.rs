//! The immutable snapshot the data path reads. Built once per accepted config by the
//! single writer (the config source); readers clone an `Arc` and never lock for long.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
};

use crate::model::{self, Objects, DATAPLANE_MODE_LABEL, MODE_AMBIENT, MODE_NONE};

/// A workload as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub netns: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// The workload's traffic goes through the mesh (namespace label, no pod opt-out).
    pub captured: bool,
}

impl WorkloadInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv4)
    }
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }
}

#[derive(Debug)]
pub struct ServicePortInfo {
    pub port: u16,
    pub target_port: u16,
    pub app_protocol: Option<String>,
    /// Endpoint workload keys, in a stable order.
    pub endpoints: Vec<Arc<WorkloadInfo>>,
    pub next: AtomicUsize,
}

#[derive(Debug)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePortInfo>,
}

impl ServiceInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub generation: u64,
    pub workloads: Vec<Arc<WorkloadInfo>>,
    pub workloads_by_ip: HashMap<IpAddr, Arc<WorkloadInfo>>,
    pub services_by_vip: HashMap<IpAddr, Arc<ServiceInfo>>,
    pub services_by_key: HashMap<String, Arc<ServiceInfo>>,
    /// Compiled L7 configuration (routes, traffic policies, JWT rules).
    pub l7: Arc<crate::l7::table::Table>,
    pub objects: Objects,
}

impl State {
    pub fn build(generation: u64, objects: Objects) -> State {
        let ambient: HashMap<&str, bool> = objects
            .namespaces
            .iter()
            .map(|n| {
                let mode = n.metadata.labels.get(DATAPLANE_MODE_LABEL);
                (
                    n.metadata.name.as_str(),
                    mode.map(String::as_str) == Some(MODE_AMBIENT),
                )
            })
            .collect();
        let workloads: Vec<Arc<WorkloadInfo>> = objects
            .workloads
            .iter()
            .map(|w| {
                let ns = w.metadata.namespace();
                let opted_out = w
                    .metadata
                    .labels
                    .get(DATAPLANE_MODE_LABEL)
                    .map(String::as_str)
                    == Some(MODE_NONE);
                Arc::new(WorkloadInfo {
                    name: w.metadata.name.clone(),
                    namespace: ns.to_owned(),
                    service_account: w.spec.service_account.clone(),
                    node: w.spec.node.clone(),
                    addresses: w.spec.addresses.clone(),
                    netns: w.spec.netns.clone(),
                    labels: w.metadata.labels.clone(),
                    captured: ambient.get(ns).copied().unwrap_or(false) && !opted_out,
                })
            })
            .collect();
        let workloads_by_ip = workloads
            .iter()
            .flat_map(|w| w.addresses.iter().map(move |a| (*a, w.clone())))
            .collect();
        let mut services_by_vip = HashMap::new();
        let mut services_by_key = HashMap::new();
        for s in &objects.services {
            let info = Arc::new(service_info(s, &workloads));
            for vip in &info.vips {
                services_by_vip.insert(*vip, info.clone());
            }
            services_by_key.insert(info.key(), info);
        }
        // The config source validated the same objects, so this does not fail.
        let l7 = crate::l7::table::Table::build(&objects).unwrap_or_else(|e| {
            tracing::error!("L7 config: {} {}: {}", e.kind, e.name, e.message);
            Default::default()
        });
        State {
            generation,
            workloads,
            workloads_by_ip,
            services_by_vip,
            services_by_key,
            l7: Arc::new(l7),
            objects,
        }
    }
}

fn service_info(s: &model::Service, workloads: &[Arc<WorkloadInfo>]) -> ServiceInfo {
    let ns = s.metadata.namespace();
    let endpoints: Vec<Arc<WorkloadInfo>> = if s.spec.selector.is_empty() {
        Vec::new()
    } else {
        workloads
            .iter()
            .filter(|w| {
                w.namespace == ns
                    && s.spec
                        .selector
                        .iter()
                        .all(|(k, v)| w.labels.get(k) == Some(v))
            })
            .cloned()
            .collect()
    };
    ServiceInfo {
        name: s.metadata.name.clone(),
        namespace: ns.to_owned(),
        labels: s.metadata.labels.clone(),
        vips: s.spec.cluster_ips.clone(),
        ports: s
            .spec
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                port: p.port,
                target_port: p.target_port.unwrap_or(p.port),
                app_protocol: p.app_protocol.clone(),
                endpoints: endpoints.clone(),
                next: AtomicUsize::new(0),
            })
            .collect(),
    }
}

impl ServicePortInfo {
    /// Round robin over the endpoints that have an address of `family_of`'s family.
    pub fn pick(&self, family_of: &SocketAddr) -> Option<SocketAddr> {
        let candidates: Vec<IpAddr> = self
            .endpoints
            .iter()
            .filter_map(|w| {
                if family_of.is_ipv4() {
                    w.ipv4()
                } else {
                    w.ipv6()
                }
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Some(SocketAddr::new(candidates[i], self.target_port))
    }
}

/// The shared handle: one writer swaps the snapshot, readers take a cheap clone.
#[derive(Debug, Default, Clone)]
pub struct StateHandle(Arc<RwLock<Arc<State>>>);

impl StateHandle {
    pub fn load(&self) -> Arc<State> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    pub fn store(&self, state: State) {
        let state = Arc::new(state);
        match self.0.write() {
            Ok(mut g) => *g = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}
