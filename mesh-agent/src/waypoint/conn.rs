//! One connection the waypoint serves: whose identity and network namespace its
//! upstream requests use, what it serves (its parent), and who is calling.
use std::{net::SocketAddr, sync::Arc};

use mesh_model::identity::Identity;

use super::runtime::Runtime;
use crate::{datapath::DataPath, local::Pod, plan::Parent};

/// One connection served by the waypoint.
pub struct Conn {
    /// Whose identity and network namespace upstream connections use.
    pub pod: Arc<Pod>,
    pub dp: DataPath,
    /// L7 state that outlives config changes.
    pub l7: Arc<Runtime>,
    pub parent: Parent,
    /// Who is calling: the pod itself (node waypoint), the HBONE peer (shared
    /// waypoint) or nobody known (a client outside the mesh at the edge).
    pub source: Option<Identity>,
    pub client: SocketAddr,
    pub original: SocketAddr,
    /// The destination's own node serving it (L7 policy enforced where the pod
    /// runs): requests go straight to the application, not through another plan.
    pub at_destination: bool,
    /// Proxies in front of this edge whose X-Forwarded-For entries are trusted
    /// (Istio's `numTrustedProxies`): the client address for policy is the Nth
    /// from the right. 0 (everywhere but a configured edge): the peer's.
    pub trusted_proxies: u8,
}

impl Conn {
    /// Rate-limit and log key of the caller: its identity, else its address.
    pub fn source_key(&self) -> String {
        match &self.source {
            Some(id) => id.to_string(),
            None => self.client.ip().to_string(),
        }
    }
}
