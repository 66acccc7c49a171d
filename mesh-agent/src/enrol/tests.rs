use super::*;
use mesh_model::config;

fn state(ns_label: &str, pod_label: &str) -> State {
    let text = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{{ns_label}}}}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {{name: a, namespace: shop, labels: {{{pod_label}}}}}
spec: {{node: n1, addresses: [198.19.1.2], netns: /run/netns/a}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {{name: b, namespace: shop}}
spec: {{node: n2, addresses: [198.19.2.2], netns: /run/netns/b}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {{name: c, namespace: other}}
spec: {{node: n1, addresses: [198.19.1.3], netns: /run/netns/c}}
"#
    );
    config::parse("t", &text).expect("test config").state()
}

struct Case {
    name: &'static str,
    ns_label: &'static str,
    pod_label: &'static str,
    want: &'static [&'static str],
}

#[test]
fn which_local_pods_are_enrolled() {
    let cases = [
        Case {
            name: "ambient namespace: its local pod only",
            ns_label: "ferrymesh.io/dataplane-mode: ambient",
            pod_label: "app: a",
            want: &["shop/a"],
        },
        Case {
            name: "namespace without the label",
            ns_label: "team: x",
            pod_label: "app: a",
            want: &[],
        },
        Case {
            name: "namespace set to none",
            ns_label: "ferrymesh.io/dataplane-mode: none",
            pod_label: "app: a",
            want: &[],
        },
        Case {
            name: "pod opts out",
            ns_label: "ferrymesh.io/dataplane-mode: ambient",
            pod_label: "ferrymesh.io/dataplane-mode: none",
            want: &[],
        },
    ];
    for c in cases {
        let (want, problems) = desired(&state(c.ns_label, c.pod_label), "n1", &Default::default());
        let got: Vec<&str> = want.keys().map(String::as_str).collect();
        assert_eq!(got, c.want, "{}", c.name);
        assert!(problems.is_empty(), "{}: {problems:?}", c.name);
    }
}

#[test]
fn cluster_mode_pods_use_the_namespace_found_for_their_address() {
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: found, namespace: shop}
spec: {node: n1, addresses: [10.244.1.5]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: lost, namespace: shop}
spec: {node: n1, addresses: [10.244.1.6]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: given, namespace: shop}
spec: {node: n1, addresses: [10.244.1.7], netns: /run/netns/given}
"#;
    let state = config::parse("t", text).expect("config").state();
    let found = [
        (
            "10.244.1.5".parse().expect("ip"),
            Found::At(PathBuf::from("/var/run/netns/cni-1")),
        ),
        (
            "10.244.1.7".parse().expect("ip"),
            Found::At(PathBuf::from("/var/run/netns/cni-other")),
        ),
    ]
    .into_iter()
    .collect();
    let (want, problems) = desired(&state, "n1", &found);
    assert_eq!(
        want["shop/found"].netns,
        PathBuf::from("/var/run/netns/cni-1")
    );
    assert_eq!(
        want["shop/given"].netns,
        PathBuf::from("/run/netns/given"),
        "the config wins"
    );
    assert!(!want.contains_key("shop/lost"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("shop/lost") && problems[0].contains("not found"),
        "{problems:?}"
    );
}

#[test]
fn an_address_held_by_two_namespaces_enrols_neither_as_its_pod() {
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: victim, namespace: shop}
spec: {node: n1, addresses: [10.244.1.5]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: split, namespace: shop}
spec: {node: n1, addresses: [10.244.1.8, "fd00::8"]}
"#;
    let state = config::parse("t", text).expect("config").state();
    let at = |p: &str| Found::At(PathBuf::from(p));
    let found = [
        (
            "10.244.1.5".parse().expect("ip"),
            Found::Ambiguous(vec![
                PathBuf::from("/var/run/netns/cni-victim"),
                PathBuf::from("/var/run/netns/cni-attacker"),
            ]),
        ),
        (
            "10.244.1.8".parse().expect("ip"),
            at("/var/run/netns/cni-8"),
        ),
        ("fd00::8".parse().expect("ip"), at("/var/run/netns/cni-9")),
    ]
    .into_iter()
    .collect();
    let (want, problems) = desired(&state, "n1", &found);
    assert!(want.is_empty(), "{want:?}");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("shop/victim") && p.contains("several network namespaces")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("shop/split") && p.contains("different network namespaces")),
        "{problems:?}"
    );
}

#[test]
fn a_terminating_pod_leaves_a_reused_address_to_its_new_owner() {
    let x: IpAddr = "10.244.1.5".parse().expect("ip");
    let y: IpAddr = "10.244.1.6".parse().expect("ip");
    let mut owners = std::collections::HashMap::new();
    // old (x, y) enrolled; then new took x while old was terminating.
    owners.insert(x, "shop/old".to_owned());
    owners.insert(y, "shop/old".to_owned());
    owners.insert(x, "shop/new".to_owned());
    assert_eq!(
        release(&mut owners, "shop/old", &[x, y]),
        [y],
        "x stays the new pod's"
    );
    assert_eq!(owners.get(&x).map(String::as_str), Some("shop/new"));
    assert_eq!(release(&mut owners, "shop/new", &[x]), [x]);
    assert!(owners.is_empty());
    // Never recorded (enrolled before the agent restarted): released.
    assert_eq!(release(&mut owners, "shop/any", &[y]), [y]);
}
