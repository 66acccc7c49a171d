//! The AuthorizationPolicy / PeerAuthentication conformance table, through the
//! cluster path: each case's objects as the API server hands them over
//! (DynamicObjects, a MeshConfig's root namespace as the control plane's flag),
//! translated by mesh-control and compiled as agents compile them. Where Istio's
//! webhook would refuse an object, the cluster (which has no webhook) must enforce
//! its fail-closed stand-in and report it: never drop it.
use kube::api::DynamicObject;
use mesh_control::translate::{self, Inputs};
use mesh_model::conformance::{self, case};
use serde::Deserialize;

fn inputs(yaml: &str) -> Inputs {
    let mut i = Inputs::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_json::Value::deserialize(doc).expect("yaml document");
        let kind = v["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "MeshConfig" {
            i.root_namespace = v["spec"]["rootNamespace"]
                .as_str()
                .unwrap_or_default()
                .into();
            continue;
        }
        let o: DynamicObject = serde_json::from_value(v).expect("a Kubernetes object");
        i.custom.entry(kind).or_default().push(o);
    }
    i
}

#[test]
fn istio_verdicts_through_the_cluster_translation() {
    let cases = conformance::cases();
    let mut failures = Vec::new();
    for c in &cases {
        let (objects, problems) = translate::objects(&inputs(&c.yaml));
        let refused = c
            .checks
            .iter()
            .any(|(_, w)| matches!(w, case::Want::Refused(_)));
        if refused == problems.is_empty() {
            failures.push(format!(
                "{}: refused {refused}, problems reported: {problems:?}",
                c.name
            ));
        }
        failures.extend(case::check(c, Ok(objects), true));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
