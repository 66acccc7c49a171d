//! Authorization, Istio semantics, as a pure function: DENY policies first, then
//! ALLOW (if any ALLOW policy applies, one must match), AUDIT only marks.
//!
//! One evaluator serves L4 and L7. Rules with L7 fields (methods, paths, hosts,
//! request principals, `when`) are judged per request by the waypoint. At L4:
//! - a connection from a mesh agent (HBONE, same node) was already judged per request
//!   by the source's waypoint, which every agent runs for destinations with L7 policy,
//!   so L7 rules do not apply there;
//! - any other connection cannot be judged at L7: ALLOW rules with L7 fields never
//!   match and DENY rules match on their L4 fields alone (fail closed), as ztunnel
//!   does without a waypoint.
use std::net::IpAddr;

use crate::{
    identity::Identity,
    model::{Action, Labels},
};

mod compile;
mod matching;

pub use compile::{policy as compile, Cidr, ConditionKey, Pattern, Policy};

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

/// Whether a policy applies to a workload: same namespace (or the root namespace)
/// and its selector, if any, matches the workload's labels.
pub fn applies(p: &Policy, t: Target<'_>) -> bool {
    if p.namespace != t.namespace && p.namespace != ROOT_NAMESPACE {
        return false;
    }
    match &p.selector {
        None => true,
        Some(sel) => sel.iter().all(|(k, v)| t.labels.get(k) == Some(v)),
    }
}

/// The rule names attributes only a request has.
pub fn rule_has_l7(r: &crate::model::Rule) -> bool {
    !r.when.is_empty()
        || r.from.iter().any(|f| {
            !f.source.request_principals.is_empty() || !f.source.not_request_principals.is_empty()
        })
        || r.to.iter().any(|t| {
            let o = &t.operation;
            !(o.methods.is_empty()
                && o.not_methods.is_empty()
                && o.paths.is_empty()
                && o.not_paths.is_empty()
                && o.hosts.is_empty())
        })
}

/// The decision for a connection or request over the policies that apply to its
/// destination (`applies` chose them when the config was compiled).
pub fn authorize<'p>(
    policies: impl IntoIterator<Item = &'p Policy> + Clone,
    c: &Connection<'_>,
) -> Verdict {
    let matching = |action: Action| {
        policies
            .clone()
            .into_iter()
            .filter(move |p| p.action == action && matching::policy(p, c))
    };
    let audited = matching(Action::Audit).map(|p| p.name.clone()).collect();
    if let Some(p) = matching(Action::Deny).next() {
        return Verdict {
            decision: Decision::Deny {
                policy: p.name.clone(),
            },
            audited,
        };
    }
    let mut allows = policies
        .into_iter()
        .filter(|p| p.action == Action::Allow)
        .peekable();
    let decision = if allows.peek().is_none() || allows.any(|p| matching::policy(p, c)) {
        Decision::Allow
    } else {
        Decision::Deny {
            policy: String::new(),
        }
    };
    Verdict { decision, audited }
}

#[cfg(test)]
mod tests;
