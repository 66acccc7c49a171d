//! L7: the waypoint. A captured connection whose destination has L7 configuration
//! (`plan` decides: a route, route-side TrafficPolicy, `appProtocol` http/http2/grpc,
//! or an L7 AuthorizationPolicy / RequestAuthentication for the destination workload)
//! is served here instead of being spliced: hyper terminates HTTP/1.1 and HTTP/2, and
//! each request is routed, filtered, checked and sent upstream with the source
//! workload's identity.
//!
//! `server` terminates HTTP and runs each request through the named `phases`
//! (route, filter, admit, choose, authorize, forward, respond; then `log`), which
//! answer with a `reply::LocalReply` when they end a request. `mesh_model::l7`
//! holds the compiled config; `router`, `filters` and `trace` decide without I/O;
//! `backend` keeps state that outlives config changes; `attempt` and `upstream`
//! send requests over routes that `connect` executes.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use crate::local::Pod;

mod attempt;
pub mod backend;
pub mod body;
pub mod filters;
pub mod log;
pub mod phases;
pub mod ratelimit;
pub mod reply;
pub mod router;
pub mod server;
pub mod standalone;
pub mod trace;
pub mod upstream;

pub use crate::plan::Parent;

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
