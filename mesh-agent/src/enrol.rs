//! Which local pods are in the mesh (pure), and enrolling/unenrolling them (I/O).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use mesh_common::ports;
use tokio::task::JoinHandle;

use crate::{
    datapath::DataPath,
    ebpf::KernelHandle,
    inpod::{self, Netns},
    local::Pod,
    metrics::Metrics,
    tls,
    tunnel::{hbone, inbound, outbound},
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
    #[error("{key} is the node's own network namespace, never a pod's: refused")]
    HostNetns { key: String },
}

/// What enrolment of one pod needs. Equal specs mean nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub key: String,
    pub netns: PathBuf,
    pub addresses: Vec<IpAddr>,
    pub namespace: String,
    pub service_account: String,
    /// The pod asks for the loopback fast path (`ferrymesh.io/fast-path`).
    pub fast_path: bool,
}

/// Local pods that should be captured, and local pods that cannot be (with why).
/// A pod without `spec.netns` (cluster mode) uses the namespace found for its
/// addresses in `found`.
/// The network namespace found for a workload's addresses: every address that
/// was found must be in the same one namespace, and no other namespace may hold
/// any of them.
fn found_netns(addresses: &[IpAddr], found: &Discovered) -> Result<Option<PathBuf>, String> {
    let mut at: Option<&PathBuf> = None;
    for a in addresses {
        match found.get(a) {
            None => {}
            Some(Found::Ambiguous(paths)) => {
                let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                return Err(format!(
                    "{a} is held by several network namespaces ({})",
                    paths.join(", ")
                ));
            }
            Some(Found::At(p)) => match at {
                Some(q) if q != p => {
                    return Err(format!(
                        "its addresses are in different network namespaces ({} and {})",
                        q.display(),
                        p.display()
                    ));
                }
                _ => at = Some(p),
            },
        }
    }
    Ok(at.cloned())
}

pub type Discovered = std::collections::HashMap<IpAddr, Found>;

pub fn desired(
    state: &State,
    node: &str,
    found: &Discovered,
) -> (BTreeMap<String, Spec>, Vec<String>) {
    let mut want = BTreeMap::new();
    let mut problems = Vec::new();
    for w in state
        .workloads
        .iter()
        .filter(|w| w.node() == node && w.captured)
    {
        let netns = match w.netns() {
            Some(n) => Some(n.clone()),
            None => match found_netns(w.addresses(), found) {
                Ok(n) => n,
                Err(why) => {
                    problems.push(format!(
                        "workload {} is not enrolled: {why}; is a pod using another's address? (give spec.netns to bind it)",
                        w.key()
                    ));
                    continue;
                }
            },
        };
        match &netns {
            Some(netns) => {
                want.insert(
                    w.key(),
                    Spec {
                        key: w.key(),
                        netns: netns.clone(),
                        addresses: w.addresses().to_vec(),
                        namespace: w.namespace().to_owned(),
                        service_account: w.service_account().to_owned(),
                        fast_path: w.object.metadata.fast_path(),
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

pub use crate::inpod::discover::Found;

pub struct Enroller {
    node: String,
    kernel: KernelHandle,
    dp: DataPath,
    /// The waypoint's state, for connections handed to it.
    l7: Arc<crate::waypoint::Runtime>,
    metrics: Arc<Metrics>,
    active: BTreeMap<String, Enrolled>,
    /// Where to find pods' namespaces when the config does not say (cluster mode).
    places: crate::inpod::discover::Places,
    found: Discovered,
    /// Address -> the pod last enrolled with it (whose entries the maps hold).
    owners: std::collections::HashMap<IpAddr, String>,
    /// Pods whose enrolment failed, blocked in the kernel (fail closed) until a
    /// retry succeeds: their spec, netns cookie and why.
    blocked: BTreeMap<String, Blocked>,
    /// Listeners a previous agent handed over (`handoff`), used instead of new ones.
    inherited: std::collections::HashMap<String, crate::handoff::PodListeners>,
    /// Duplicates of every enrolled pod's listeners, for a successor.
    kept: KeptListeners,
    /// Namespaces the CNI plugin handed over before their pod is in the config:
    /// blocked in the kernel until enrolled. netns path -> (cookie, addresses).
    provisional: BTreeMap<PathBuf, (u64, Vec<IpAddr>)>,
}

/// What a successor would be handed: the enrolled pods' listeners, by key.
pub type KeptListeners = Arc<std::sync::Mutex<BTreeMap<String, Arc<crate::handoff::Kept>>>>;

struct Blocked {
    spec: Spec,
    cookie: Option<u64>,
    why: String,
}

/// The addresses of `key` whose kernel and registry entries are its own, removed
/// from `owners`: those no pod enrolled later took over.
pub fn release(
    owners: &mut std::collections::HashMap<IpAddr, String>,
    key: &str,
    addresses: &[IpAddr],
) -> Vec<IpAddr> {
    addresses
        .iter()
        .copied()
        .filter(|a| {
            let own = owners.get(a).is_none_or(|o| o == key);
            if own {
                owners.remove(a);
            }
            own
        })
        .collect()
}

impl Enroller {
    pub fn new(node: String, kernel: KernelHandle, dp: DataPath, metrics: Arc<Metrics>) -> Self {
        Enroller {
            node,
            kernel,
            dp,
            l7: Arc::default(),
            metrics,
            active: BTreeMap::new(),
            places: Default::default(),
            found: Default::default(),
            owners: Default::default(),
            blocked: BTreeMap::new(),
            inherited: Default::default(),
            kept: Default::default(),
            provisional: BTreeMap::new(),
        }
    }

    /// CNI ADD: a new pod's namespace, blocked until its workload is enrolled.
    pub fn provisional(
        &mut self,
        netns_path: &std::path::Path,
        ips: &[IpAddr],
    ) -> Result<(), Error> {
        let key = netns_path.display().to_string();
        let netns = Netns::open(netns_path).map_err(|source| Error::Netns {
            key: key.clone(),
            source,
        })?;
        let cookie = netns.cookie();
        let own = Netns::open(std::path::Path::new("/proc/self/ns/net")).map(|n| n.cookie());
        if own.is_ok_and(|c| c == cookie) {
            return Err(Error::HostNetns { key });
        }
        if self.active.values().any(|e| e.cookie == cookie) {
            return Ok(());
        }
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .block(&netns, ips)
            .map_err(|source| Error::Kernel {
                key,
                source: Box::new(source),
            })?;
        self.provisional
            .insert(netns_path.to_owned(), (cookie, ips.to_vec()));
        Ok(())
    }

    /// CNI DEL: forgets a namespace handed over but never enrolled.
    pub fn drop_provisional(&mut self, netns_path: &std::path::Path) {
        let Some((cookie, ips)) = self.provisional.remove(netns_path) else {
            return;
        };
        if self.active.values().any(|e| e.cookie == cookie) {
            return;
        }
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = k.unenrol(cookie, &ips) {
            tracing::warn!(netns = %netns_path.display(), "CNI DEL: {e}");
        }
    }

    /// Listeners handed over by the agent this one replaces.
    pub fn inherit(&mut self, l: std::collections::HashMap<String, crate::handoff::PodListeners>) {
        self.inherited = l;
    }

    pub fn kept(&self) -> KeptListeners {
        self.kept.clone()
    }

    /// A successor took the listeners: stop accepting on them (it accepts now) and
    /// leave the kernel's entries to it. Proxied connections run on.
    pub fn stop_accepting(&mut self) {
        for (_, e) in std::mem::take(&mut self.active) {
            for t in e.tasks {
                t.abort();
            }
        }
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
        // Look for namespaces again whenever a local pod that needs one is not
        // enrolled: it is new, or a new pod took a known address (never trust the
        // namespace an address was seen in before).
        let missing = state.workloads.iter().any(|w| {
            w.node() == self.node
                && w.captured
                && w.netns().is_none()
                && !self.active.contains_key(&w.key())
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
        self.unblock_gone(&want);
        for (key, spec) in want {
            if self.active.contains_key(&key) {
                continue;
            }
            match self.enrol(spec.clone()) {
                Ok(e) => {
                    tracing::info!(workload = %key, "enrolled");
                    for a in &e.spec.addresses {
                        self.owners.insert(*a, key.clone());
                    }
                    let cookie = e.cookie;
                    self.provisional.retain(|_, (c, _)| *c != cookie);
                    self.active.insert(key.clone(), e);
                    if self.blocked.remove(&key).is_some() {
                        tracing::info!(workload = %key, "unblocked: enrolled on retry");
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    self.block(spec, &why);
                    problems.push(format!(
                        "{why}; blocked (its connections are refused) and retried"
                    ));
                }
            }
        }
        let active = &self.active;
        self.metrics.prune(|k| active.contains_key(k));
        let blocked = self
            .blocked
            .iter()
            .map(|(k, b)| (k.clone(), b.why.clone()))
            .collect();
        self.metrics.set_blocked(blocked);
        problems
    }

    /// A pod that should be captured but could not be enrolled: its netns is put
    /// in the kernel's maps as blocked, so it sends and receives nothing around the
    /// mesh. A netns that cannot even be opened cannot be blocked (said so).
    /// Done again after each failed retry: a failure half-way through `enrol` may
    /// have undone the kernel entries.
    fn block(&mut self, spec: Spec, why: &str) {
        let again = self.blocked.get(&spec.key).is_some_and(|b| b.spec == spec);
        let cookie = match Netns::open(&spec.netns) {
            Ok(netns) => {
                let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
                match k.block(&netns, &spec.addresses) {
                    Ok(()) => Some(netns.cookie()),
                    Err(e) => {
                        tracing::error!(workload = %spec.key, "cannot block a pod whose enrolment failed: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(workload = %spec.key, "enrolment failed and its netns cannot be opened to block it: {e}");
                None
            }
        };
        if !again {
            tracing::warn!(workload = %spec.key, blocked = cookie.is_some(), "enrolment failed, the pod is blocked and retried: {why}");
        }
        let key = spec.key.clone();
        let why = why.to_owned();
        self.blocked.insert(key, Blocked { spec, cookie, why });
    }

    /// Lifts the block of pods no longer to be captured (or changed).
    fn unblock_gone(&mut self, want: &BTreeMap<String, Spec>) {
        let gone: Vec<String> = self
            .blocked
            .iter()
            .filter(|(k, b)| want.get(*k) != Some(&b.spec))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(b) = self.blocked.remove(&key) else {
                continue;
            };
            if let Some(cookie) = b.cookie {
                let mine = release(&mut self.owners, &key, &b.spec.addresses);
                let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = k.unenrol(cookie, &mine) {
                    tracing::warn!(workload = %key, "unblock: {e}");
                }
            }
            tracing::info!(workload = %key, "block lifted: no longer to be captured");
        }
    }

    /// Takes a pod out of the mesh. An address a later pod was enrolled with (it
    /// was reused while this pod terminated) keeps that pod's entries.
    fn unenrol(&mut self, e: Enrolled) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&e.spec.key);
        let mine = release(&mut self.owners, &e.spec.key, &e.spec.addresses);
        self.dp.pods.set(&mine, None);
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = k.unenrol(e.cookie, &mine) {
            tracing::warn!(workload = %e.spec.key, "unenrol: {err}");
        }
        drop(k);
        // Stops accepting; connections already proxied run on in their own tasks.
        for t in e.tasks {
            t.abort();
        }
        self.dp.inputs.certs.release(&e.identity);
        tracing::info!(workload = %e.spec.key, "unenrolled");
    }

    fn enrol(&mut self, spec: Spec) -> Result<Enrolled, Error> {
        let key = spec.key.clone();
        let netns = Netns::open(&spec.netns).map_err(|source| Error::Netns {
            key: key.clone(),
            source,
        })?;
        let listeners = match self.inherited.remove(&key) {
            Some(l) if l.cookie == netns.cookie() => {
                tracing::info!(workload = %key, "listeners taken over from the previous agent");
                Listeners {
                    out4: l.out4,
                    out6: l.out6,
                    inbound: l.inbound,
                    hbone: l.hbone,
                }
            }
            _ => Listeners::open(&netns, &key)?,
        };
        let kept = crate::handoff::keep(
            netns.cookie(),
            &listeners.out4,
            listeners.out6.as_ref(),
            &listeners.inbound,
            &listeners.hbone,
        )
        .map_err(|source| Error::Listener {
            key: key.clone(),
            source,
        })?;
        let cookie = netns.cookie();
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enrol(&netns, &spec.addresses, &listeners.inbound, spec.fast_path)
            .map_err(|source| Error::Kernel {
                key: key.clone(),
                source: Box::new(source),
            })?;
        let identity = Identity::new(
            &self.dp.inputs.trust_domain,
            &spec.namespace,
            &spec.service_account,
        );
        let pod = Arc::new(Pod {
            key: key.clone(),
            netns,
            identity: identity.clone(),
            addresses: spec.addresses.clone(),
            counters: self.metrics.workload(&key),
        });
        // Known as local before its listeners serve, so that no connection to it is
        // planned as leaving the node.
        self.dp.pods.set(&spec.addresses, Some(pod.clone()));
        // The identity is wanted before the listeners serve: a connection already
        // waiting (a handed-over backlog) then waits for its certificate instead of
        // finding none.
        self.dp.inputs.certs.acquire(&identity);
        let tasks = self.serve(listeners, &pod).inspect_err(|_| {
            self.dp.inputs.certs.release(&identity);
            self.dp.pods.set(&spec.addresses, None);
            let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = k.unenrol(cookie, &spec.addresses) {
                tracing::warn!(workload = %key, "undoing a failed enrolment: {e}");
            }
        })?;
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Arc::new(kept));
        Ok(Enrolled {
            spec,
            cookie,
            identity,
            tasks,
        })
    }

    /// Serves the pod's listeners: outbound, inbound and HBONE.
    fn serve(&self, l: Listeners, pod: &Arc<Pod>) -> Result<Vec<JoinHandle<()>>, Error> {
        let key = &pod.key;
        let listener_err = |source| Error::Listener {
            key: key.clone(),
            source,
        };
        let resolver = Arc::new(crate::identity::manager::PodCertResolver {
            manager: self.dp.inputs.certs.clone(),
            identity: pod.identity.clone(),
        });
        let server_tls =
            tls::server_config(resolver, self.dp.inputs.roots.clone()).map_err(|source| {
                Error::Tls {
                    key: key.clone(),
                    source,
                }
            })?;
        let tokio_listener = |l| tokio::net::TcpListener::from_std(l).map_err(listener_err);
        let mut tasks = Vec::new();
        for out in std::iter::once(l.out4).chain(l.out6) {
            let out = tokio_listener(out)?;
            tasks.push(tokio::spawn(outbound::serve(
                out,
                pod.clone(),
                self.dp.clone(),
                self.l7.clone(),
            )));
        }
        let hb = tokio_listener(l.hbone)?;
        tasks.push(tokio::spawn(hbone::server::serve(
            hb,
            tokio_rustls::TlsAcceptor::from(server_tls),
            pod.clone(),
            self.dp.clone(),
            self.l7.clone(),
        )));
        let inb = tokio_listener(l.inbound)?;
        tasks.push(tokio::spawn(inbound::serve(
            inb,
            pod.clone(),
            self.dp.clone(),
        )));
        Ok(tasks)
    }
}

/// A pod's listening sockets, made inside its network namespace.
struct Listeners {
    out4: std::net::TcpListener,
    /// IPv6 may be disabled in a pod; then only IPv4 is captured there.
    out6: Option<std::net::TcpListener>,
    inbound: std::net::TcpListener,
    hbone: std::net::TcpListener,
}

impl Listeners {
    fn open(netns: &Netns, key: &str) -> Result<Listeners, Error> {
        let err = |source| Error::Netns {
            key: key.to_owned(),
            source,
        };
        let listen =
            |ip: IpAddr, port, v6_only| netns.listen(SocketAddr::new(ip, port), v6_only, 1024);
        let (v4_any, v6_any) = (Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into());
        let out4 = listen(Ipv4Addr::LOCALHOST.into(), ports::OUTBOUND, false).map_err(err)?;
        let out6 = listen(Ipv6Addr::LOCALHOST.into(), ports::OUTBOUND, true)
            .map_err(|e| tracing::debug!(workload = %key, "no IPv6 outbound listener: {e}"))
            .ok();
        let inbound = match listen(v6_any, ports::INBOUND, false) {
            Ok(l) => l,
            Err(_) => listen(v4_any, ports::INBOUND, false).map_err(err)?,
        };
        let hbone = listen(v6_any, ports::HBONE, false).map_err(err)?;
        Ok(Listeners {
            out4,
            out6,
            inbound,
            hbone,
        })
    }
}

#[cfg(test)]
mod tests;
