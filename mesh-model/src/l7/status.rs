//! Route status as the Gateway API defines it: per parentRef an `Accepted` and a
//! `ResolvedRefs` condition with the standard reasons, computed from the built
//! table. The control plane writes it back to Kubernetes and meshctl shows it.
use serde::{Deserialize, Serialize};

use super::table::{ParentKey, Table};
use crate::model::{ObjectMeta, Objects, ParentRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    Accepted,
    ResolvedRefs,
}

/// One condition of one parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub status: bool,
    /// The Gateway API's reason: `Accepted`, `NotAllowedByListeners`,
    /// `UnsupportedValue`, `ResolvedRefs`, `RefNotPermitted`, `InvalidKind`,
    /// `BackendNotFound`.
    pub reason: String,
    pub message: String,
    /// The route's `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentStatus {
    pub parent_ref: ParentRef,
    pub conditions: Vec<Condition>,
}

/// The status of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub parents: Vec<ParentStatus>,
}

impl RouteStatus {
    /// The condition of `kind` at the parent `i`.
    pub fn condition(&self, i: usize, kind: ConditionType) -> Option<&Condition> {
        self.parents
            .get(i)?
            .conditions
            .iter()
            .find(|c| c.kind == kind)
    }
}

fn condition(kind: ConditionType, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: None,
    }
}

/// The key a parentRef names, as the table files it.
fn parent_key(ns: &str, p: &ParentRef) -> ParentKey {
    let key = format!("{}/{}", p.namespace.as_deref().unwrap_or(ns), p.name);
    match p.kind.as_deref() {
        Some("Service") => ParentKey::Service(key),
        _ => ParentKey::Gateway(key),
    }
}

fn route_status(t: &Table, kind: &str, meta: &ObjectMeta, refs: &[ParentRef]) -> RouteStatus {
    let ns = meta.namespace();
    let label = format!("{kind} {ns}/{}", meta.name);
    let refused = t
        .degraded
        .iter()
        .find(|(o, what)| *o == label && what.contains("refused"))
        .map(|(_, what)| what.as_str());
    let parents = refs
        .iter()
        .map(|p| {
            let key = parent_key(ns, p);
            let parent = match &key {
                ParentKey::Service(s) => format!("Service {s}"),
                ParentKey::Gateway(g) => format!("Gateway {g}"),
            };
            let rejected = t
                .rejected
                .iter()
                .find(|r| r.route == label && r.parent == parent);
            let accepted = match (refused, rejected) {
                (Some(why), _) => {
                    condition(ConditionType::Accepted, false, "UnsupportedValue", why)
                }
                (None, Some(r)) => condition(
                    ConditionType::Accepted,
                    false,
                    "NotAllowedByListeners",
                    r.reason,
                ),
                (None, None) => condition(ConditionType::Accepted, true, "Accepted", "attached"),
            };
            // The first backendRef of this route at this parent that does not resolve.
            let unresolved = t.parents.get(&key).and_then(|p| {
                p.entries
                    .iter()
                    .filter(|e| e.rule.route == label)
                    .flat_map(|e| &e.rule.backends)
                    .find_map(|b| b.unresolved)
            });
            let resolved = match unresolved {
                Some(u) => condition(ConditionType::ResolvedRefs, false, u.reason(), u.message()),
                None => condition(
                    ConditionType::ResolvedRefs,
                    true,
                    "ResolvedRefs",
                    "all backendRefs resolved",
                ),
            };
            let mut conditions = vec![accepted, resolved];
            for c in &mut conditions {
                c.observed_generation = meta.generation;
            }
            ParentStatus {
                parent_ref: p.clone(),
                conditions,
            }
        })
        .collect();
    RouteStatus {
        kind: kind.to_owned(),
        namespace: ns.to_owned(),
        name: meta.name.clone(),
        parents,
    }
}

/// The status of every HTTPRoute and GRPCRoute of `objects` under the table built
/// from them.
pub fn routes(t: &Table, objects: &Objects) -> Vec<RouteStatus> {
    let http = objects
        .http_routes
        .iter()
        .map(|r| route_status(t, "HTTPRoute", &r.metadata, &r.spec.parent_refs));
    let grpc = objects
        .grpc_routes
        .iter()
        .map(|r| route_status(t, "GRPCRoute", &r.metadata, &r.spec.parent_refs));
    http.chain(grpc).collect()
}

#[cfg(test)]
mod tests;
