//! Shared set-up for the lab tests.
#![allow(dead_code)]
use ferrymesh_tests::{Lab, LabSpec, PodSpec, ServiceSpec};

pub const MIB: u64 = 1 << 20;

/// Two nodes; `shop` is meshed, `plain` is not.
/// a: client, local-server (shop), outsider (plain); b: server (shop).
pub fn two_node_lab() -> Lab {
    two_node_lab_with(&[])
}

pub fn two_node_lab_with(agent_args: &[&str]) -> Lab {
    let mut lab = Lab::new(two_node_spec(agent_args)).expect("lab");
    lab.start_agents().expect("agents");
    lab
}

/// The spec of `two_node_lab`, for labs set up differently before their agents start.
pub fn two_node_spec(agent_args: &[&str]) -> LabSpec {
    LabSpec {
        agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("shop".into(), true), ("plain".into(), false)],
        pods: vec![
            PodSpec::new("client", "shop", "a"),
            PodSpec::new("local-server", "shop", "a").label("tier", "backend"),
            PodSpec::new("outsider", "plain", "a"),
            PodSpec::new("server", "shop", "b"),
            PodSpec::new("other", "shop", "a"),
        ],
        services: vec![ServiceSpec {
            name: "server".into(),
            namespace: "shop".into(),
            app: "server".into(),
            port: 80,
            target_port: 8080,
        }],
    }
}

pub fn assert_intact(r: &serde_json::Value, bytes: u64) {
    assert_eq!(r["sent"].as_u64(), Some(bytes), "{r}");
    assert_eq!(r["received"].as_u64(), Some(bytes), "{r}");
    assert_eq!(r["sent_sha256"], r["received_sha256"], "{r}");
}

/// PeerAuthentication STRICT for namespace `shop`.
pub const STRICT: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
"#;

/// A DENY of shop/client's principal on the `app: server` pods (a document to
/// append to a config: it starts with `---`).
pub const DENY_CLIENT: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
"#;
