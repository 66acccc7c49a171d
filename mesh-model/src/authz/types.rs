//! What a decision is asked about and what it answers.
use std::net::IpAddr;

use crate::{identity::Identity, model::Labels};

/// Policies in this namespace apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "ferrymesh-system";

/// What the destination agent knows of a connection.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// None for plaintext (no peer certificate).
    pub source: Option<&'a Identity>,
    pub source_ip: IpAddr,
    pub destination_port: u16,
    pub l7: L7<'a>,
}

/// What is known above L4.
#[derive(Debug, Clone, Copy)]
pub enum L7<'a> {
    /// A request, judged at the waypoint.
    Request(&'a Request<'a>),
    /// L4 only, from a mesh agent whose waypoint judged the requests.
    JudgedAtSource,
    /// L4 only and nobody judged requests.
    None,
}

/// An HTTP request's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `iss/sub` of a validated JWT.
    pub principal: Option<&'a str>,
    pub claims: Option<&'a serde_json::Value>,
}

/// The destination workload.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by a DENY policy, or by no ALLOW policy matching (`policy` empty).
    Deny {
        policy: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}
