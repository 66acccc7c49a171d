//! What the data path reads, split by who writes it:
//! - `Inputs`: set up once (certificates and the HBONE pool change inside, the state
//!   is swapped by the config source) and only read by connections;
//! - `LocalPods`: the enrolled pods (the enroller writes);
//! - `waypoint::Runtime`: L7 state that outlives config changes (backends, buckets,
//!   upstream connections), used only by the L7 path.
use std::sync::Arc;

use mesh_model::{
    identity::Identity,
    state::{StateHandle, WorkloadInfo},
};

use crate::{
    ebpf::OrigDst, identity::manager::CertManager, local::LocalPods, telemetry::Telemetry,
    tunnel::hbone::pool::Pool, waypoint,
};

/// How meshed destinations on other nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// HBONE: mutual TLS.
    Hbone,
    /// Plaintext, for measurements and debugging only.
    Plaintext,
}

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
    pub l7: Arc<waypoint::Runtime>,
}

impl DataPath {
    pub fn new(inputs: Inputs) -> DataPath {
        DataPath {
            inputs: Arc::new(inputs),
            pods: Arc::default(),
            l7: Arc::default(),
        }
    }
}
