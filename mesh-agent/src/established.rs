//! Established connections, re-checked when policy changes (as ztunnel does).
//! Every connection the destination's AuthorizationPolicy let in (plaintext
//! inbound, HBONE streams, same-node) is registered with who asked for what; after
//! each new config all of them are authorized again, and those no longer allowed
//! are reset and logged with the reason.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use mesh_model::{authz::Judging, identity::Identity};
use tokio::sync::Notify;

use crate::local::Pod;

struct Entry {
    pod: Arc<Pod>,
    source: Option<Identity>,
    ip: IpAddr,
    target: SocketAddr,
    judging: Judging,
    close: Arc<Notify>,
}

/// The registry of established connections.
#[derive(Default)]
pub struct Established {
    next: AtomicU64,
    conns: Arc<Mutex<HashMap<u64, Entry>>>,
}

/// One registered connection: `closed()` resolves when policy no longer allows
/// it; dropping it unregisters.
pub struct Registration {
    id: u64,
    conns: Arc<Mutex<HashMap<u64, Entry>>>,
    close: Arc<Notify>,
}

impl Registration {
    /// Resolves when a re-check refused the connection.
    pub async fn closed(&self) {
        self.close.notified().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.id);
    }
}

impl Established {
    /// Registers a connection from `source` (None: plaintext) at `ip` to `target`,
    /// checked with `judging`.
    pub fn register(
        &self,
        pod: &Arc<Pod>,
        source: Option<&Identity>,
        ip: IpAddr,
        target: SocketAddr,
        judging: Judging,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let entry = Entry {
            pod: pod.clone(),
            source: source.cloned(),
            ip,
            target,
            judging,
            close: close.clone(),
        };
        let mut m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(id, entry);
        Registration {
            id,
            conns: self.conns.clone(),
            close,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks `allowed` again for every established connection (the enforcement
    /// point, under the state in force); closes, counts and logs those it refuses.
    /// Returns how many were closed.
    pub fn recheck<E: std::fmt::Display>(
        &self,
        allowed: impl Fn(&Pod, Option<&Identity>, IpAddr, SocketAddr, Judging) -> Result<(), E>,
    ) -> usize {
        let m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        for e in m.values() {
            if let Err(denied) = allowed(&e.pod, e.source.as_ref(), e.ip, e.target, e.judging) {
                let source = e
                    .source
                    .as_ref()
                    .map_or_else(|| format!("plaintext {}", e.ip), ToString::to_string);
                tracing::warn!(%source, destination = %e.pod.identity, port = e.target.port(), "established connection closed: {denied} (policy changed)");
                e.pod.counters.inbound_closed_by_policy.inc();
                // notify_one stores a permit: the close is not lost if the splice
                // is not waiting at this instant.
                e.close.notify_one();
                closed += 1;
            }
        }
        closed
    }
}
