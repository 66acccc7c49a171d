//! Which local pods are in the mesh (pure), and enrolling/unenrolling them (I/O).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use mesh_common::ports;
use tokio::task::JoinHandle;

use crate::shared::{Pod, Shared};
use crate::{
    ebpf::KernelHandle,
    inpod::{self, Netns},
    metrics::Metrics,
    tls,
    tunnel::hbone,
    tunnel::{inbound, outbound},
};
use mesh_model::{identity::Identity, state::State};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("workload {key}: {source}")]
    Netns { key: String, source: inpod::Error },
    #[error("workload {key}: {source}")]
    Kernel {
        key: String,
        source: Box<crate::ebpf::Error>,
    },
    #[error("workload {key}: {source}")]
    Tls { key: String, source: tls::Error },
    #[error("workload {key}: cannot serve a listener: {source}")]
    Listener { key: String, source: std::io::Error },
}

/// What enrolment of one pod needs. Equal specs mean nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub key: String,
    pub netns: PathBuf,
    pub addresses: Vec<IpAddr>,
    pub namespace: String,
    pub service_account: String,
}

/// Local pods that should be captured, and local pods that cannot be (with why).
/// A pod without `spec.netns` (cluster mode) uses the namespace found for its
/// addresses in `found`.
pub fn desired(
    state: &State,
    node: &str,
    found: &std::collections::HashMap<IpAddr, PathBuf>,
) -> (BTreeMap<String, Spec>, Vec<String>) {
    let mut want = BTreeMap::new();
    let mut problems = Vec::new();
    for w in state
        .workloads
        .iter()
        .filter(|w| w.node == node && w.captured)
    {
        let netns = w
            .netns
            .clone()
            .or_else(|| w.addresses.iter().find_map(|a| found.get(a).cloned()));
        match &netns {
            Some(netns) => {
                want.insert(
                    w.key(),
                    Spec {
                        key: w.key(),
                        netns: netns.clone(),
                        addresses: w.addresses.clone(),
                        namespace: w.namespace.clone(),
                        service_account: w.service_account.clone(),
                    },
                );
            }
            None => problems.push(format!(
                "workload {} runs on this node but its network namespace was not found (no spec.netns, and no pinned namespace or process has its addresses); it is not captured yet",
                w.key()
            )),
        }
    }
    (want, problems)
}

struct Enrolled {
    spec: Spec,
    cookie: u64,
    identity: Identity,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Enroller {
    node: String,
    kernel: KernelHandle,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    active: BTreeMap<String, Enrolled>,
    /// Where to find pods' namespaces when the config does not say (cluster mode).
    places: crate::inpod::discover::Places,
    found: std::collections::HashMap<IpAddr, PathBuf>,
}

impl Enroller {
    pub fn new(
        node: String,
        kernel: KernelHandle,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Enroller {
            node,
            kernel,
            shared,
            metrics,
            active: BTreeMap::new(),
            places: Default::default(),
            found: Default::default(),
        }
    }

    /// Where pods' network namespaces are looked for when the config has none.
    pub fn with_places(mut self, places: crate::inpod::discover::Places) -> Self {
        self.places = places;
        self
    }

    pub fn identities(&self) -> Vec<Identity> {
        self.active.values().map(|e| e.identity.clone()).collect()
    }

    pub fn enrolled(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }

    /// Brings the kernel in line with the state. Failures are logged and retried on
    /// the next call; they never undo other pods.
    pub fn reconcile(&mut self, state: &State) -> Vec<String> {
        // Look for namespaces only when a local pod needs one not found yet.
        let missing = state.workloads.iter().any(|w| {
            w.node == self.node
                && w.captured
                && w.netns.is_none()
                && !w.addresses.iter().any(|a| self.found.contains_key(a))
        });
        if missing {
            self.found = crate::inpod::discover::scan(&self.places);
        }
        let (want, mut problems) = desired(state, &self.node, &self.found);
        let stale: Vec<String> = self
            .active
            .iter()
            .filter(|(k, e)| want.get(*k) != Some(&e.spec))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(e) = self.active.remove(&key) {
                self.unenrol(e);
            }
        }
        for (key, spec) in want {
            if self.active.contains_key(&key) {
                continue;
            }
            match self.enrol(spec) {
                Ok(e) => {
                    tracing::info!(workload = %key, "enrolled");
                    self.active.insert(key, e);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }

    pub fn unenrol_all(&mut self) {
        for (_, e) in std::mem::take(&mut self.active) {
            self.unenrol(e);
        }
    }

    fn unenrol(&mut self, e: Enrolled) {
        self.shared.set_local(&e.spec.addresses, None);
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = k.unenrol(e.cookie, &e.spec.addresses) {
            tracing::warn!(workload = %e.spec.key, "unenrol: {err}");
        }
        drop(k);
        // Stops accepting; connections already proxied run on in their own tasks.
        for t in e.tasks {
            t.abort();
        }
        self.shared.certs.release(&e.identity);
        tracing::info!(workload = %e.spec.key, "unenrolled");
    }

    fn enrol(&mut self, spec: Spec) -> Result<Enrolled, Error> {
        let key = spec.key.clone();
        let netns_err = |source| Error::Netns {
            key: key.clone(),
            source,
        };
        let listener_err = |source| Error::Listener {
            key: key.clone(),
            source,
        };
        let netns = Netns::open(&spec.netns).map_err(netns_err)?;
        let out4 = netns
            .listen(
                SocketAddr::from((Ipv4Addr::LOCALHOST, ports::OUTBOUND)),
                false,
                1024,
            )
            .map_err(netns_err)?;
        // IPv6 may be disabled in a pod; then only IPv4 is captured there.
        let out6 = netns
            .listen(
                SocketAddr::from((Ipv6Addr::LOCALHOST, ports::OUTBOUND)),
                true,
                1024,
            )
            .map_err(|e| tracing::debug!(workload = %key, "no IPv6 outbound listener: {e}"))
            .ok();
        let inb = match netns.listen(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, ports::INBOUND)),
            false,
            1024,
        ) {
            Ok(l) => l,
            Err(_) => netns
                .listen(
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, ports::INBOUND)),
                    false,
                    1024,
                )
                .map_err(netns_err)?,
        };
        let hbone_listener = netns
            .listen(
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, ports::HBONE)),
                false,
                1024,
            )
            .map_err(netns_err)?;
        let cookie = netns.cookie();
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enrol(&netns, &spec.addresses, &inb)
            .map_err(|source| Error::Kernel {
                key: key.clone(),
                source: Box::new(source),
            })?;
        let identity = Identity::new(
            &self.shared.trust_domain,
            &spec.namespace,
            &spec.service_account,
        );
        let pod = Arc::new(Pod {
            key: key.clone(),
            netns,
            identity: identity.clone(),
            addresses: spec.addresses.clone(),
            counters: self.metrics.workload(&key),
            waypoint: Default::default(),
        });
        let resolver = Arc::new(tls::PodCertResolver {
            manager: self.shared.certs.clone(),
            identity: identity.clone(),
        });
        let server_tls =
            tls::server_config(resolver, self.shared.roots.clone()).map_err(|e| Error::Tls {
                key: key.clone(),
                source: e,
            })?;
        let mut tasks = Vec::new();
        let mut listeners = vec![out4];
        listeners.extend(out6);
        for l in listeners {
            let l = tokio::net::TcpListener::from_std(l).map_err(listener_err)?;
            tasks.push(tokio::spawn(outbound::serve(
                l,
                pod.clone(),
                self.shared.clone(),
            )));
        }
        let inb = tokio::net::TcpListener::from_std(inb).map_err(listener_err)?;
        let hb = tokio::net::TcpListener::from_std(hbone_listener).map_err(listener_err)?;
        self.shared.set_local(&spec.addresses, Some(pod.clone()));
        tasks.push(tokio::spawn(hbone::server::serve(
            hb,
            tokio_rustls::TlsAcceptor::from(server_tls),
            pod.clone(),
            self.shared.clone(),
        )));
        tasks.push(tokio::spawn(inbound::serve(inb, pod, self.shared.clone())));
        self.shared.certs.acquire(&identity);
        Ok(Enrolled {
            spec,
            cookie,
            identity,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests;
