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
use crate::model::Action;

mod compile;
mod matching;
mod types;

pub use compile::{policy as compile, rule_has_l7, Cidr, ConditionKey, Pattern, Policy};
pub use types::*;

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
