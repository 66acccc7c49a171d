//! The compiled L7 configuration: the route table (`table`), JWT rules (`jwt`) and
//! Gateway API durations (`duration`). Pure; the waypoint executes it.
use crate::{
    authz,
    state::{State, WorkloadInfo},
};

pub mod duration;
pub mod jwt;
pub mod table;

/// Whether a workload has policy that only a waypoint can enforce.
pub fn workload_has_l7(state: &State, w: &WorkloadInfo) -> bool {
    let target = authz::Target {
        namespace: &w.namespace,
        labels: &w.labels,
    };
    state
        .objects
        .authorization_policies
        .iter()
        .any(|p| authz::applies(p, target) && p.spec.rules.iter().any(authz::rule_has_l7))
        || state
            .l7
            .jwt
            .iter()
            .any(|j| j.applies(&w.namespace, &w.labels))
}
