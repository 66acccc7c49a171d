//! The immutable snapshot the data path reads: the config compiled once per version
//! into indexed parts (`topology`: workloads and services with what applies to each;
//! `policy`: AuthorizationPolicy and PeerAuthentication; `l7`: the route table and JWT
//! rules), so that every per-connection decision is a lookup, not a scan. Built by the
//! single writer (the config source); readers clone an `Arc` and never lock for long.
//!
//! A new version recompiles only the parts whose kinds changed (policies and the L7
//! table are reused from the previous state otherwise); the topology, which binds the
//! other parts to workloads, is rebuilt from indexes.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use crate::{
    l7::table::Table,
    model::{Kind, Objects},
};

pub mod policy;
pub mod topology;

pub use policy::Policies;
pub use topology::{NamespaceInfo, ServiceInfo, ServicePortInfo, WorkloadInfo};

/// Why a config does not compile: the object and what is wrong with it.
pub type CompileError = crate::l7::table::BuildError;

#[derive(Debug, Default)]
pub struct State {
    pub generation: u64,
    pub workloads: Vec<Arc<WorkloadInfo>>,
    pub workloads_by_ip: HashMap<IpAddr, Arc<WorkloadInfo>>,
    pub services_by_vip: HashMap<IpAddr, Arc<ServiceInfo>>,
    pub services_by_key: HashMap<String, Arc<ServiceInfo>>,
    pub namespaces: HashMap<String, NamespaceInfo>,
    /// Compiled AuthorizationPolicies and PeerAuthentications.
    pub policies: Arc<Policies>,
    /// Compiled L7 configuration (routes, traffic policies, JWT rules).
    pub l7: Arc<Table>,
    /// What this was compiled from (config dumps, explanations); shared, not copied.
    pub objects: Arc<Objects>,
}

const POLICY_KINDS: [Kind; 3] = [
    Kind::AuthorizationPolicy,
    Kind::PeerAuthentication,
    Kind::MeshConfig,
];
const L7_KINDS: [Kind; 7] = [
    Kind::MeshConfig,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::TrafficPolicy,
    Kind::DirectResponse,
    Kind::RequestAuthentication,
    Kind::ReferenceGrant,
];

impl State {
    /// Policy parts in force that could not be understood or compiled, each with
    /// how it is enforced instead (fail-closed): (`Kind ns/name`, what).
    pub fn fail_closed(&self) -> impl Iterator<Item = &(String, String)> {
        self.policies.degraded.iter().chain(self.l7.degraded.iter())
    }

    /// Compiles `objects`, reusing the parts of `previous` whose kinds are unchanged.
    pub fn compile(
        generation: u64,
        objects: Arc<Objects>,
        previous: Option<&State>,
    ) -> Result<State, CompileError> {
        let changed = previous.map(|p| p.objects.changed_kinds(&objects));
        let unchanged = |kinds: &[Kind]| {
            previous.filter(|_| {
                changed
                    .as_ref()
                    .is_some_and(|c| !c.iter().any(|k| kinds.contains(k)))
            })
        };
        let policies = match unchanged(&POLICY_KINDS) {
            Some(p) => p.policies.clone(),
            None => Arc::new(Policies::compile(&objects)?),
        };
        let l7 = match unchanged(&L7_KINDS) {
            Some(p) => p.l7.clone(),
            None => Arc::new(Table::build(&objects)?),
        };
        let t = topology::Topology::build(&objects, &policies, &l7);
        Ok(State {
            generation,
            workloads: t.workloads,
            workloads_by_ip: t.workloads_by_ip,
            services_by_vip: t.services_by_vip,
            services_by_key: t.services_by_key,
            namespaces: t.namespaces,
            policies,
            l7,
            objects,
        })
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
