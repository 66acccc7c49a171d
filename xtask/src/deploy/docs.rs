//! Checks on every rendered manifest: identity, workloads, CRDs, and the RBAC the
//! control plane's watches need.
use std::collections::BTreeSet;

use serde_json::Value;

use mesh_model::model::{ApiKind, CUSTOM_KINDS};

const NAMESPACED: [&str; 8] = [
    "ServiceAccount",
    "Deployment",
    "DaemonSet",
    "Service",
    "PodDisruptionBudget",
    "ConfigMap",
    "Secret",
    "Role",
];
const CLUSTER: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

/// (API group, resource) pairs a ClusterRole grants list and watch on.
pub(super) type Grants = BTreeSet<(String, String)>;

/// The document's problems; the control plane's ClusterRole adds to `rbac`.
pub(super) fn check_doc(doc: &Value, rbac: &mut Grants) -> Vec<String> {
    let mut p = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or("");
    let name = doc["metadata"]["name"].as_str().unwrap_or("");
    let what = format!("{kind} {name}");
    if doc["apiVersion"].as_str().is_none() || kind.is_empty() || name.is_empty() {
        p.push(format!(
            "{what}: apiVersion, kind and metadata.name are required"
        ));
    }
    if NAMESPACED.contains(&kind) && doc["metadata"]["namespace"].as_str().is_none() {
        p.push(format!(
            "{what}: namespaced kind without metadata.namespace"
        ));
    }
    if !NAMESPACED.contains(&kind) && !CLUSTER.contains(&kind) {
        p.push(format!("{what}: unexpected kind"));
    }
    match kind {
        "Deployment" | "DaemonSet" => check_workload(doc, kind, &what, &mut p),
        "ClusterRole" if name == "ferrymesh-control" => list_watch_grants(doc, rbac),
        "CustomResourceDefinition" => check_crd(doc, &what, &mut p),
        _ => {}
    }
    p
}

fn check_workload(doc: &Value, kind: &str, what: &str, p: &mut Vec<String>) {
    let sel = doc["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let labels = &doc["spec"]["template"]["metadata"]["labels"];
    if sel.is_empty() || sel.iter().any(|(k, v)| &labels[k] != v) {
        p.push(format!(
            "{what}: spec.selector.matchLabels must match the pod template's labels"
        ));
    }
    for c in items(&doc["spec"]["template"]["spec"]["containers"]) {
        if c["image"].as_str().is_none_or(|i| !i.contains(':')) {
            p.push(format!(
                "{what}: container {} needs an image with a tag",
                c["name"]
            ));
        }
    }
    if kind == "DaemonSet" && doc["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"].is_null() {
        p.push(format!("{what}: set updateStrategy.rollingUpdate.maxSurge so the new agent starts before the old one stops"));
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    items(v).filter_map(Value::as_str)
}

fn list_watch_grants(doc: &Value, rbac: &mut Grants) {
    for r in items(&doc["rules"]) {
        let verbs: Vec<&str> = strs(&r["verbs"]).collect();
        if !(verbs.contains(&"list") && verbs.contains(&"watch")) {
            continue;
        }
        for g in strs(&r["apiGroups"]) {
            for res in strs(&r["resources"]) {
                rbac.insert((g.to_owned(), res.to_owned()));
            }
        }
    }
}

fn check_crd(doc: &Value, what: &str, p: &mut Vec<String>) {
    let s = serde_json::to_string(doc).unwrap_or_default();
    if s.contains("\"$ref\"") {
        p.push(format!(
            "{what}: $ref in a schema (CRD schemas must be structural)"
        ));
    }
    for v in items(&doc["spec"]["versions"]) {
        if v["schema"]["openAPIV3Schema"]["type"] != "object" {
            p.push(format!(
                "{what}: version {} has no openAPIV3Schema",
                v["name"]
            ));
        }
    }
}

/// Every kind the control plane watches has list/watch in its ClusterRole and
/// (for its own and Istio's kinds) a CRD in the chart.
pub(super) fn check_watches(rbac: &Grants, docs: &[(String, Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut watched: Vec<(String, String)> = vec![
        ("".into(), "namespaces".into()),
        ("".into(), "pods".into()),
        ("".into(), "services".into()),
        ("discovery.k8s.io".into(), "endpointslices".into()),
    ];
    watched.extend(
        CUSTOM_KINDS
            .iter()
            .map(|k| (k.group.to_string(), k.plural.to_string())),
    );
    for w in watched {
        if !rbac.contains(&w) {
            problems.push(format!(
                "ClusterRole ferrymesh-control: no list/watch on {}/{}",
                w.0, w.1
            ));
        }
    }
    let crd_kinds: BTreeSet<&str> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "CustomResourceDefinition")
        .filter_map(|(_, d)| d["spec"]["names"]["kind"].as_str())
        .collect();
    for ApiKind {
        group: g, kind: k, ..
    } in CUSTOM_KINDS
    {
        if g != "gateway.networking.k8s.io" && !crd_kinds.contains(k) {
            problems.push(format!(
                "no CRD for {k} ({g}), which the control plane watches"
            ));
        }
    }
    problems
}
