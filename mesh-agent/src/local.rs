//! The pods enrolled on this node, by address: what the data path of each needs.
//! One writer, the enroller; every listener task reads.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use mesh_model::identity::Identity;

use crate::{inpod::Netns, metrics::WorkloadCounters};

/// One enrolled pod.
pub struct Pod {
    /// namespace/name
    pub key: String,
    pub netns: Netns,
    pub identity: Identity,
    pub addresses: Vec<IpAddr>,
    pub counters: Arc<WorkloadCounters>,
}

impl Pod {
    /// The pod's address of the same family as `like`.
    pub fn address_like(&self, like: &IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == like.is_ipv4())
    }
}

/// Enrolled pods by address.
#[derive(Default)]
pub struct LocalPods(RwLock<HashMap<IpAddr, Arc<Pod>>>);

impl LocalPods {
    /// The enrolled pod that owns `ip`, if any.
    pub fn get(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.get(&ip.to_canonical()).cloned()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.contains_key(&ip.to_canonical())
    }

    /// Written by the enroller only.
    pub(crate) fn set(&self, addresses: &[IpAddr], pod: Option<Arc<Pod>>) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        for a in addresses {
            match &pod {
                Some(p) => m.insert(*a, p.clone()),
                None => m.remove(a),
            };
        }
    }
}
