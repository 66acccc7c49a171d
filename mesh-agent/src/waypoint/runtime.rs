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

/// State of the waypoint that outlives config changes.
#[derive(Default)]
pub struct Runtime {
    pub backends: backend::Backends,
    pub buckets: ratelimit::Buckets,
    /// Upstream HTTP connections, per source pod (they carry its identity).
    clients: Mutex<ClientsByPod>,
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
