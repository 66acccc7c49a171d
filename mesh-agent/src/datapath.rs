//! What the data path reads, split by who writes it:
//! - `Inputs`: set up once (certificates and the HBONE pool change inside, the state
//!   is swapped by the config source) and only read by connections;
//! - `LocalPods`: the enrolled pods (the enroller writes).
//!
//! The L7 path has state of its own (`waypoint::Runtime`), held apart from these.
use std::sync::Arc;

use mesh_model::{
    identity::Identity,
    state::{StateHandle, WorkloadInfo},
};

use crate::{
    ebpf::OrigDst, guard::Guard, identity::manager::CertManager, local::LocalPods,
    telemetry::Telemetry, tunnel::hbone::pool::Pool,
};

pub use crate::plan::Tunnel;

/// The read-only inputs of every connection.
pub struct Inputs {
    /// Original destinations of captured connections (None in a standalone waypoint).
    pub orig_dst: Option<OrigDst>,
    pub state: StateHandle,
    pub trust_domain: String,
    pub certs: Arc<CertManager>,
    pub roots: Arc<rustls::RootCertStore>,
    pub pool: Pool,
    pub telemetry: Telemetry,
    pub tunnel: Tunnel,
    /// Hardening limits and the counter of what they refused.
    pub guard: Guard,
}

impl Inputs {
    pub fn identity_of(&self, w: &WorkloadInfo) -> Identity {
        Identity::new(&self.trust_domain, w.namespace(), w.service_account())
    }
}

/// The handle every listener task holds.
#[derive(Clone)]
pub struct DataPath {
    pub inputs: Arc<Inputs>,
    pub pods: Arc<LocalPods>,
    /// Connections let in by policy, re-checked when it changes.
    pub established: Arc<crate::established::Established>,
    /// Connections and HBONE streams being served, from accept to the end (what
    /// an agent that handed over waits for before it exits).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// True once a successor took the listeners: HBONE connections send GOAWAY.
    pub draining: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Counts one connection in `DataPath::in_flight` until dropped.
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl DataPath {
    pub fn new(inputs: Inputs) -> DataPath {
        DataPath {
            inputs: Arc::new(inputs),
            pods: Arc::default(),
            established: Arc::default(),
            in_flight: Arc::default(),
            draining: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Marks a connection as being served until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }
}
