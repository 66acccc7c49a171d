//! What every pod's data path shares: the pods of this node, the state snapshot,
//! certificates, the HBONE pool, telemetry, and the destination-side checks
//! (L4 policy, STRICT mTLS) that read the state.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, OnceLock, RwLock},
};

use crate::{
    ebpf::OrigDst, identity::manager::CertManager, inpod::Netns, metrics::WorkloadCounters,
    tunnel::hbone::pool::Pool,
};
use mesh_model::{
    authz,
    identity::Identity,
    model::MtlsMode,
    state::{StateHandle, WorkloadInfo},
};

/// What the data path of one enrolled pod needs.
pub struct Pod {
    pub key: String,
    pub netns: Netns,
    pub identity: Identity,
    pub addresses: Vec<IpAddr>,
    pub counters: Arc<WorkloadCounters>,
    /// Upstream HTTP connections of the pod's waypoint requests (made on first use).
    pub waypoint: OnceLock<Arc<crate::waypoint::upstream::Clients>>,
}

impl Pod {
    /// The pod's address of the same family as `like`.
    pub fn address_like(&self, like: &IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == like.is_ipv4())
    }

    pub fn waypoint_clients(&self) -> Arc<crate::waypoint::upstream::Clients> {
        self.waypoint.get_or_init(Default::default).clone()
    }
}

/// Shared by every pod's data path.
pub struct Shared {
    /// Original destinations of captured connections (None in a standalone waypoint).
    pub orig_dst: Option<OrigDst>,
    pub state: StateHandle,
    pub trust_domain: String,
    pub certs: Arc<CertManager>,
    pub roots: Arc<rustls::RootCertStore>,
    pub pool: Pool,
    pub telemetry: crate::telemetry::Telemetry,
    /// Reach meshed destinations on other nodes over HBONE (else plaintext).
    pub hbone: bool,
    /// L7 state that outlives config changes.
    pub waypoint: crate::waypoint::Runtime,
    /// Enrolled pods of this node by address (written by the Enroller only).
    local: RwLock<HashMap<IpAddr, Arc<Pod>>>,
}

impl Shared {
    pub fn new(
        orig_dst: Option<OrigDst>,
        state: StateHandle,
        trust_domain: String,
        certs: Arc<CertManager>,
        roots: Arc<rustls::RootCertStore>,
        hbone: bool,
    ) -> Shared {
        Shared {
            orig_dst,
            state,
            trust_domain,
            certs,
            roots,
            pool: Pool::new(std::time::Duration::from_secs(60)),
            telemetry: crate::telemetry::Telemetry::default(),
            hbone,
            waypoint: crate::waypoint::Runtime::default(),
            local: RwLock::default(),
        }
    }

    pub fn identity_of(&self, w: &WorkloadInfo) -> Identity {
        Identity::new(&self.trust_domain, &w.namespace, &w.service_account)
    }

    /// L4 policy of the destination pod for a connection; Err carries the reason.
    pub fn authorize(
        &self,
        pod: &Pod,
        source: Option<&Identity>,
        source_ip: IpAddr,
        port: u16,
    ) -> Result<(), String> {
        let state = self.state.load();
        let Some(w) = pod
            .addresses
            .first()
            .and_then(|a| state.workloads_by_ip.get(a))
        else {
            return Err("destination workload is no longer known".into());
        };
        let verdict = authz::evaluate(
            &state.objects.authorization_policies,
            authz::Target {
                namespace: &w.namespace,
                labels: &w.labels,
            },
            &authz::Connection {
                source,
                source_ip,
                destination_port: port,
                // Mesh sources judged requests in their waypoint.
                l7: if source.is_some() {
                    authz::L7::JudgedAtSource
                } else {
                    authz::L7::None
                },
            },
        );
        let src = source
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("plaintext {source_ip}"));
        for p in &verdict.audited {
            tracing::info!(target: "audit", source = %src, destination = %pod.identity, port, policy = %p, "audited connection");
        }
        match verdict.decision {
            authz::Decision::Allow => Ok(()),
            authz::Decision::Deny { policy } => {
                let why = if policy.is_empty() {
                    "no ALLOW policy matches".to_owned()
                } else {
                    format!("denied by policy {policy}")
                };
                tracing::warn!(source = %src, destination = %pod.identity, port, "connection refused: {why}");
                let labels = crate::telemetry::ConnectionLabels::new(
                    "inbound",
                    "-",
                    source,
                    Some(&pod.identity),
                    "DENIED",
                );
                self.telemetry.refused.get_or_create(&labels).inc();
                Err(why)
            }
        }
    }

    /// PeerAuthentication STRICT: the pod refuses plaintext inbound.
    pub fn strict(&self, pod: &Pod) -> bool {
        let state = self.state.load();
        let Some(w) = pod
            .addresses
            .first()
            .and_then(|a| state.workloads_by_ip.get(a))
        else {
            return false;
        };
        state.objects.peer_authentications.iter().any(|p| {
            let ns = p.metadata.namespace();
            (ns == w.namespace || ns == authz::ROOT_NAMESPACE)
                && p.spec.mtls.mode == MtlsMode::Strict
                && p.spec.selector.as_ref().is_none_or(|s| {
                    s.match_labels
                        .iter()
                        .all(|(k, v)| w.labels.get(k) == Some(v))
                })
        })
    }

    /// The enrolled pod on this node that owns `ip`, if any.
    pub fn local_pod(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        local.get(&ip.to_canonical()).cloned()
    }

    /// Written by the Enroller only.
    pub(crate) fn set_local(&self, addresses: &[IpAddr], pod: Option<Arc<Pod>>) {
        let mut local = self.local.write().unwrap_or_else(|p| p.into_inner());
        for a in addresses {
            match &pod {
                Some(p) => local.insert(*a, p.clone()),
                None => local.remove(a),
            };
        }
    }
}
