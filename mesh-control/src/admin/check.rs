//! Why a pod is or is not in the mesh, and what applies to it. Pure.
use std::sync::Arc;

use mesh_model::{
    identity::Identity,
    model::{Objects, ParentRef, DATAPLANE_MODE_LABEL},
    state::{State, WorkloadInfo},
};

use super::api::{Check, PolicyRef};

fn reason(objects: &Objects, w: &WorkloadInfo) -> String {
    let namespace = w.namespace();
    let ns_mode = objects
        .namespaces
        .iter()
        .find(|n| n.metadata.name == namespace)
        .and_then(|n| n.metadata.labels.get(DATAPLANE_MODE_LABEL));
    let pod_mode = w.labels().get(DATAPLANE_MODE_LABEL);
    match (w.captured, ns_mode, pod_mode.map(String::as_str)) {
        (true, _, _) => "namespace labelled ambient".to_owned(),
        (false, _, Some("none")) => "the pod opts out (label none)".to_owned(),
        (false, Some(m), _) => format!("namespace label is {m:?}, not \"ambient\""),
        (false, None, _) => format!("namespace {namespace} has no {DATAPLANE_MODE_LABEL} label"),
    }
}

/// The Services that select the workload.
fn services(state: &State, w: &WorkloadInfo) -> Vec<String> {
    let mut out: Vec<String> = state
        .services_by_key
        .values()
        .filter(|s| {
            s.ports
                .iter()
                .any(|p| p.endpoints.iter().any(|e| e.key() == w.key()))
        })
        .map(|s| s.key())
        .collect();
    out.sort();
    out
}

/// Routes whose parents are one of `services`.
fn routes(objects: &Objects, services: &[String]) -> Vec<String> {
    let attached = |ns: &str, refs: &[ParentRef]| {
        refs.iter()
            .filter(|r| r.kind.as_deref() == Some("Service"))
            .any(|r| {
                services.contains(&format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or(ns),
                    r.name
                ))
            })
    };
    let http = objects.http_routes.iter().filter_map(|r| {
        let ns = r.metadata.namespace();
        attached(ns, &r.spec.parent_refs).then(|| format!("HTTPRoute {ns}/{}", r.metadata.name))
    });
    let grpc = objects.grpc_routes.iter().filter_map(|r| {
        let ns = r.metadata.namespace();
        attached(ns, &r.spec.parent_refs).then(|| format!("GRPCRoute {ns}/{}", r.metadata.name))
    });
    http.chain(grpc).collect()
}

pub fn check(objects: &Objects, trust_domain: &str, namespace: &str, name: &str) -> Option<Check> {
    let state = State::compile(0, Arc::new(objects.clone()), None).ok()?;
    let w = state
        .workloads
        .iter()
        .find(|w| w.namespace() == namespace && w.name() == name)?;
    let services = services(&state, w);
    let authorization_policies = w
        .policies
        .iter()
        .map(|p| PolicyRef {
            name: p.name.clone(),
            action: format!("{:?}", p.action).to_uppercase(),
            l7: p.has_l7(),
        })
        .collect();
    Some(Check {
        pod: format!("{namespace}/{name}"),
        node: w.node().to_owned(),
        captured: w.captured,
        reason: reason(objects, w),
        identity: Identity::new(trust_domain, w.namespace(), w.service_account()).to_string(),
        addresses: w.addresses().to_vec(),
        routes: routes(objects, &services),
        services,
        authorization_policies,
        l7: w.l7,
    })
}

#[cfg(test)]
mod tests;
