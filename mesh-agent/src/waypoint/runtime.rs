//! The waypoint's state that outlives config changes: backend statistics
//! (load balancing, circuit breakers, outlier detection), rate-limit buckets, and
//! the upstream HTTP connections of each source pod.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use super::{backend, ratelimit, upstream};
use crate::local::Pod;

/// Upstream connections by source pod key, with the pod they belong to.
type ClientsByPod = HashMap<String, (Weak<Pod>, Arc<upstream::Clients>)>;

/// Mirrored requests in flight at once; more are not sent (mirrors are best
/// effort and must not let one slow mirror backend pile up tasks).
pub const MAX_MIRRORS: usize = 128;

/// State of the waypoint that outlives config changes.
pub struct Runtime {
    pub backends: backend::Backends,
    pub buckets: ratelimit::Buckets,
    pub mirrors: Arc<tokio::sync::Semaphore>,
    /// Upstream HTTP connections, per source pod (they carry its identity).
    clients: Mutex<ClientsByPod>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            backends: Default::default(),
            buckets: Default::default(),
            mirrors: Arc::new(tokio::sync::Semaphore::new(MAX_MIRRORS)),
            clients: Default::default(),
        }
    }
}

impl Runtime {
    /// The upstream connections of `pod`'s requests (made on first use, dropped
    /// with the pod).
    pub fn clients(&self, pod: &Arc<Pod>) -> Arc<upstream::Clients> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((owner, c)) = m.get(&pod.key) {
            if owner.upgrade().is_some_and(|o| Arc::ptr_eq(&o, pod)) {
                return c.clone();
            }
        }
        m.retain(|_, (owner, _)| owner.strong_count() > 0);
        let c = Arc::new(upstream::Clients::default());
        m.insert(pod.key.clone(), (Arc::downgrade(pod), c.clone()));
        c
    }
}
