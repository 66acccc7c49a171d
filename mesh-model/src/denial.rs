//! One refusal as a node agent remembers it (its admin API's `/denials`, read by
//! `meshctl denials`): who was refused where, by which policy, and why.
use serde::{Deserialize, Serialize};

/// Where the refusal was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// A connection (L4 policy, STRICT mTLS).
    L4,
    /// An HTTP request (the waypoint's L7 policy).
    L7,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// When (Unix milliseconds).
    pub unix_ms: u64,
    pub layer: Layer,
    /// The caller's SPIFFE identity, or `plaintext <address>`.
    pub source: String,
    /// The destination workload (`namespace/name`) or `service namespace/name`.
    pub destination: String,
    /// The address and port asked for.
    pub target: String,
    /// `METHOD path` for a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The DENY policy that matched (`namespace/name`); none when no ALLOW
    /// policy matched or for STRICT mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Why, in words.
    pub reason: String,
}

impl Denial {
    /// Whether it concerns the pod `namespace/name` (as the destination).
    pub fn concerns(&self, pod: &str) -> bool {
        self.destination == pod
    }
}
