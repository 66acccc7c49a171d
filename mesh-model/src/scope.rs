//! What one node receives, and deltas between two versions. No I/O: table-tested.
//!
//! A node gets every Namespace, Service, policy and route (small, and any pod may
//! reach any Service), its own Node object, and every Workload (remote ones are
//! endpoints and identities) with `spec.netns` only on its own workloads.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{ObjectMeta, Objects};
use crate::proto::config::{ConfigUpdate, Resource, ResourceKey};

/// kind, namespace, name
pub type Key = (String, String, String);

/// A node's resources: key -> YAML.
pub type Set = BTreeMap<Key, String>;

fn put<T: Serialize>(set: &mut Set, kind: &str, meta: &ObjectMeta, obj: &T) {
    let ns = if kind == "Node" || kind == "Namespace" {
        String::new()
    } else {
        meta.namespace().to_owned()
    };
    match serde_yaml::to_string(obj) {
        Ok(yaml) => {
            set.insert((kind.to_owned(), ns, meta.name.clone()), yaml);
        }
        Err(e) => tracing::error!(kind, name = %meta.name, "cannot serialize: {e}"),
    }
}

pub fn for_node(o: &Objects, node: &str) -> Set {
    let mut s = Set::new();
    for n in o.nodes.iter().filter(|n| n.metadata.name == node) {
        put(&mut s, "Node", &n.metadata, n);
    }
    for x in &o.namespaces {
        put(&mut s, "Namespace", &x.metadata, x);
    }
    for w in &o.workloads {
        if w.spec.node == node {
            put(&mut s, "Workload", &w.metadata, w);
        } else {
            let mut remote = (**w).clone();
            remote.spec.netns = None;
            put(&mut s, "Workload", &w.metadata, &remote);
        }
    }
    for x in &o.services {
        put(&mut s, "Service", &x.metadata, x);
    }
    for x in &o.authorization_policies {
        put(&mut s, "AuthorizationPolicy", &x.metadata, x);
    }
    for x in &o.peer_authentications {
        put(&mut s, "PeerAuthentication", &x.metadata, x);
    }
    for x in &o.http_routes {
        put(&mut s, "HTTPRoute", &x.metadata, x);
    }
    for x in &o.grpc_routes {
        put(&mut s, "GRPCRoute", &x.metadata, x);
    }
    for x in &o.traffic_policies {
        put(&mut s, "TrafficPolicy", &x.metadata, x);
    }
    for x in &o.direct_responses {
        put(&mut s, "DirectResponse", &x.metadata, x);
    }
    for x in &o.request_authentications {
        put(&mut s, "RequestAuthentication", &x.metadata, x);
    }
    s
}

fn key(k: &Key) -> ResourceKey {
    ResourceKey {
        kind: k.0.clone(),
        namespace: k.1.clone(),
        name: k.2.clone(),
    }
}

pub fn snapshot(version: u64, set: &Set) -> ConfigUpdate {
    ConfigUpdate {
        version,
        snapshot: true,
        upserts: set
            .iter()
            .map(|(k, y)| Resource {
                key: Some(key(k)),
                yaml: y.clone(),
            })
            .collect(),
        deletes: Vec::new(),
    }
}

/// The delta from `old` to `new`, or None when nothing changed.
pub fn delta(version: u64, old: &Set, new: &Set) -> Option<ConfigUpdate> {
    let upserts: Vec<Resource> = new
        .iter()
        .filter(|(k, y)| old.get(*k) != Some(*y))
        .map(|(k, y)| Resource {
            key: Some(key(k)),
            yaml: y.clone(),
        })
        .collect();
    let deletes: Vec<ResourceKey> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(key)
        .collect();
    if upserts.is_empty() && deletes.is_empty() {
        return None;
    }
    Some(ConfigUpdate {
        version,
        snapshot: false,
        upserts,
        deletes,
    })
}

/// Applies an update to the set an agent holds.
pub fn apply(set: &mut Set, u: &ConfigUpdate) {
    if u.snapshot {
        set.clear();
    }
    for r in &u.upserts {
        if let Some(k) = &r.key {
            set.insert(
                (k.kind.clone(), k.namespace.clone(), k.name.clone()),
                r.yaml.clone(),
            );
        }
    }
    for k in &u.deletes {
        set.remove(&(k.kind.clone(), k.namespace.clone(), k.name.clone()));
    }
}

/// The set as one config text (documents separated by `---`), for the same parser
/// and validation as a local file.
pub fn to_text(set: &Set) -> String {
    let mut out = String::new();
    for y in set.values() {
        out.push_str(y);
        out.push_str("---\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CFG: &str = r#"
apiVersion: ferrymesh.io/v1alpha1
kind: Node
metadata: {name: a}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Node
metadata: {name: b}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: on-a, namespace: shop, labels: {app: x}}
spec: {node: a, addresses: [198.19.1.10], netns: /run/netns/on-a}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: on-b, namespace: shop, labels: {app: x}}
spec: {node: b, addresses: [198.19.2.10], netns: /run/netns/on-b}
---
apiVersion: v1
kind: Service
metadata: {name: x, namespace: shop}
spec: {clusterIPs: [198.18.100.1], selector: {app: x}, ports: [{port: 80}]}
"#;

    fn objects(text: &str) -> Objects {
        config::parse("t", text).expect("config")
    }

    #[test]
    fn node_scope() {
        let s = for_node(&objects(CFG), "a");
        let keys: Vec<String> = s
            .keys()
            .map(|k| format!("{}/{}/{}", k.0, k.1, k.2))
            .collect();
        assert_eq!(
            keys,
            [
                "Namespace//shop",
                "Node//a",
                "Service/shop/x",
                "Workload/shop/on-a",
                "Workload/shop/on-b"
            ],
            "only its own Node; every workload and service"
        );
        let on_a = &s[&("Workload".into(), "shop".into(), "on-a".into())];
        let on_b = &s[&("Workload".into(), "shop".into(), "on-b".into())];
        assert!(on_a.contains("/run/netns/on-a"), "{on_a}");
        assert!(
            !on_b.contains("netns"),
            "a remote workload's netns stays on its node: {on_b}"
        );
        // What the agent rebuilds parses and validates like a file.
        let back = config::parse("control-plane", &to_text(&s)).expect("round trip");
        assert_eq!(back.workloads.len(), 2);
        assert_eq!(back.nodes.len(), 1);
    }

    #[test]
    fn deltas_carry_only_changes_and_rebuild_the_same_set() {
        let old = for_node(&objects(CFG), "a");
        let cases: [(&str, String, usize, usize); 4] = [
            ("no change", CFG.to_owned(), 0, 0),
            (
                "label added",
                CFG.replace(
                    "labels: {app: x}}\nspec: {node: b",
                    "labels: {app: x, v: '2'}}\nspec: {node: b",
                ),
                1,
                0,
            ),
            (
                "service removed",
                CFG.split("---\napiVersion: v1\nkind: Service")
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                0,
                1,
            ),
            (
                "other node's netns changed: nothing for a",
                CFG.replace("/run/netns/on-b", "/run/netns/moved"),
                0,
                0,
            ),
        ];
        for (name, text, ups, dels) in cases {
            let new = for_node(&objects(&text), "a");
            match delta(7, &old, &new) {
                None => assert_eq!((ups, dels), (0, 0), "{name}"),
                Some(d) => {
                    assert_eq!((d.upserts.len(), d.deletes.len()), (ups, dels), "{name}");
                    assert!(!d.snapshot && d.version == 7, "{name}");
                    let mut held = old.clone();
                    apply(&mut held, &d);
                    assert_eq!(held, new, "{name}: old + delta = new");
                }
            }
        }
        let mut held = Set::new();
        apply(&mut held, &snapshot(1, &old));
        assert_eq!(held, old, "a snapshot replaces everything");
    }
}
