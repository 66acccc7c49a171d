//! Authorization, Istio semantics, as a pure function: DENY policies first, then
//! ALLOW (if any ALLOW policy applies, one must match), AUDIT only marks; dry-run
//! policies are evaluated beside, never enforced.
//!
//! One evaluator serves L4 and L7 (`L7` says what is known): with a request every
//! field is judged; where only an L4 check decides, ztunnel's rule applies (an ALLOW
//! rule with HTTP attributes matches nothing, a DENY rule matches on its L4 fields);
//! before requests that will be judged one by one, ALLOW rules count on their L4
//! fields and DENY rules with HTTP attributes wait for the requests. The `when` keys
//! ztunnel enforces at L4 (source.ip, source.namespace, source.principal,
//! destination.ip, destination.port) are judged everywhere.
use crate::model::Action;

mod compile;
mod keys;
mod matching;
mod patterns;
mod types;
pub mod validate;

pub use compile::{policy as compile, Policy, Rule, Scope, Target as PolicyTarget};
pub use keys::{Condition, ConditionKey, ServiceAccount, Values};
pub use patterns::{Cidr, Pattern, Segment};
pub use types::*;

/// Whether a policy applies to a workload: its namespace (any, for a policy of the
/// root namespace) and its selector, if any; or a Gateway it targets runs on it.
pub fn applies(p: &Policy, t: Target<'_>) -> bool {
    let namespace = p.namespace == t.namespace || p.mesh_wide;
    match &p.scope {
        Scope::Namespace => namespace,
        Scope::Selector(sel) => namespace && sel.iter().all(|(k, v)| t.labels.get(k) == Some(v)),
        Scope::Targets(targets) => {
            p.namespace == t.namespace
                && targets.iter().any(|g| match g {
                    PolicyTarget::Gateway(name) => t.labels.get(GATEWAY_NAME_LABEL) == Some(name),
                    PolicyTarget::Service(_) => false,
                })
        }
    }
}

/// Whether a policy is attached to the Service `namespace/name` (`targetRefs`).
pub fn applies_to_service(p: &Policy, namespace: &str, name: &str) -> bool {
    match &p.scope {
        Scope::Targets(targets) => {
            p.namespace == namespace
                && targets
                    .iter()
                    .any(|g| matches!(g, PolicyTarget::Service(s) if s == name))
        }
        _ => false,
    }
}

/// The decision of the enforced policies among `policies`, and what the dry-run
/// ones would have decided.
pub fn authorize<'p>(
    policies: impl IntoIterator<Item = &'p Policy> + Clone,
    c: &Connection<'_>,
) -> Verdict {
    let (decision, audited) = decide(policies.clone(), c);
    let mut dry_run = Vec::new();
    for action in [Action::Deny, Action::Allow] {
        let mut of_action = policies
            .clone()
            .into_iter()
            .filter(|p| p.dry_run && p.action == action)
            .peekable();
        if of_action.peek().is_none() {
            continue;
        }
        let matched = of_action.find(|p| matching::policy(p, c));
        dry_run.push(DryRun {
            action,
            would_allow: matched.is_some() == (action == Action::Allow),
            policy: matched.map(|p| p.name.clone()),
        });
    }
    Verdict {
        decision,
        audited,
        dry_run,
    }
}

/// The enforced (not dry-run) policies' decision and the AUDIT ones that matched.
fn decide<'p>(
    policies: impl IntoIterator<Item = &'p Policy> + Clone,
    c: &Connection<'_>,
) -> (Decision, Vec<String>) {
    let enforced = || policies.clone().into_iter().filter(|p| !p.dry_run);
    let matching =
        |action: Action| enforced().filter(move |p| p.action == action && matching::policy(p, c));
    let audited = matching(Action::Audit).map(|p| p.name.clone()).collect();
    if let Some(p) = matching(Action::Deny).next() {
        let policy = p.name.clone();
        return (Decision::Deny { policy }, audited);
    }
    let mut allows = enforced().filter(|p| p.action == Action::Allow).peekable();
    let decision = if allows.peek().is_none() || allows.any(|p| matching::policy(p, c)) {
        Decision::Allow
    } else {
        Decision::Deny {
            policy: String::new(),
        }
    };
    (decision, audited)
}

#[cfg(test)]
mod tests;
