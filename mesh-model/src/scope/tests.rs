use std::sync::Arc;

use prost::Message;

use super::*;
use crate::{
    model::{Node, NodeSpec, ObjectMeta},
    testing::{config, namespace, service, workload},
};

fn node(name: &str) -> Node {
    Node {
        api_version: "ferrymesh.io/v1alpha1".into(),
        kind: "Node".into(),
        metadata: ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        },
        spec: NodeSpec::default(),
    }
}

fn objects() -> Objects {
    let mut on_a = workload("shop", "on-a")
        .node("a")
        .addr("198.19.1.10")
        .label("app", "x");
    on_a.spec.netns = Some("/run/netns/on-a".into());
    let mut on_b = workload("shop", "on-b")
        .node("b")
        .addr("198.19.2.10")
        .label("app", "x");
    on_b.spec.netns = Some("/run/netns/on-b".into());
    config()
        .with(node("a"))
        .with(node("b"))
        .with(namespace("shop").ambient())
        .with(on_a)
        .with(on_b)
        .with(
            service("shop", "x")
                .vip("198.18.100.1")
                .select("app", "x")
                .port(80, 80),
        )
}

fn view_of(set: &Set) -> View {
    let mut v = View::default();
    for u in updates(1, None, set, MAX_MESSAGE_BYTES) {
        v.apply(&u).expect("decodes");
    }
    v
}

#[test]
fn a_node_gets_its_own_node_and_netns_only() {
    let s = Encoder::default().for_node(1, &objects(), "a");
    let keys: Vec<String> = s.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        [
            "Node a",
            "Namespace shop",
            "Workload shop/on-a",
            "Workload shop/on-b",
            "Service shop/x"
        ]
    );
    let text = |name: &str| {
        let k = s.keys().find(|k| k.name == name).expect("key");
        String::from_utf8_lossy(&s[k].json).into_owned()
    };
    assert!(text("on-a").contains("/run/netns/on-a"), "{}", text("on-a"));
    assert!(
        !text("on-b").contains("netns"),
        "a remote workload's netns stays on its node"
    );
    // What the agent decodes validates and compiles like a file.
    let back = view_of(&s).objects();
    crate::config::validate_objects("control plane", &back).expect("valid");
    assert_eq!((back.workloads.len(), back.nodes.len()), (2, 1));
}

#[test]
fn deltas_carry_only_changes_and_rebuild_the_same_set() {
    let mut enc = Encoder::default();
    let old = enc.for_node(1, &objects(), "a");
    let relabel = {
        let mut o = objects();
        let mut w = (*o.workloads[1]).clone();
        w.metadata.labels.insert("v".into(), "2".into());
        o.workloads[1] = Arc::new(w);
        o
    };
    let no_service = {
        let mut o = objects();
        o.services.clear();
        o
    };
    let moved_elsewhere = {
        let mut o = objects();
        let mut w = (*o.workloads[1]).clone();
        w.spec.netns = Some("/run/netns/moved".into());
        o.workloads[1] = Arc::new(w);
        o
    };
    let cases: [(&str, Objects, usize, usize); 4] = [
        ("no change", objects(), 0, 0),
        ("a label added", relabel, 1, 0),
        ("a service removed", no_service, 0, 1),
        (
            "another node's netns changed: nothing for a",
            moved_elsewhere,
            0,
            0,
        ),
    ];
    for (name, o, ups, dels) in cases {
        let new = enc.for_node(2, &o, "a");
        let msgs = updates(2, Some(&old), &new, MAX_MESSAGE_BYTES);
        let got: (usize, usize) = msgs.iter().fold((0, 0), |(u, d), m| {
            (u + m.upserts.len(), d + m.deletes.len())
        });
        assert_eq!(got, (ups, dels), "{name}");
        assert!(msgs.iter().all(|m| !m.snapshot), "{name}");
        let mut held = view_of(&old);
        for m in &msgs {
            held.apply(m).expect("decodes");
        }
        assert_eq!(
            held.objects(),
            view_of(&new).objects(),
            "{name}: old + delta = new"
        );
    }
}

#[test]
fn an_unchanged_object_is_encoded_once() {
    let mut enc = Encoder::default();
    let first = enc.for_node(1, &objects(), "a");
    let again = enc.for_node(2, &objects(), "a");
    for (k, e) in &first {
        assert_eq!(e.json.as_ptr(), again[k].json.as_ptr(), "{k} encoded again");
    }
}

#[test]
fn a_snapshot_over_the_message_limit_is_split_and_arrives_whole() {
    let mut o = config().with(namespace("scale"));
    for i in 0..20_000u32 {
        o = o.with(
            workload("scale", &format!("pod-{i}"))
                .node(&format!("far-{}", i % 50))
                .addr(&format!(
                    "100.{}.{}.{}",
                    64 + i / 65536,
                    (i / 256) % 256,
                    i % 256
                ))
                .label("app", &format!("svc-{}", i % 1000)),
        );
    }
    let set = Encoder::default().for_node(1, &o, "a");
    let msgs = updates(1, None, &set, MAX_MESSAGE_BYTES);
    let total: usize = msgs.iter().map(|m| m.encoded_len()).sum();
    assert!(
        total > 4 << 20,
        "the test needs more than tonic's 4 MiB: {total}"
    );
    assert!(msgs.len() > 1 && msgs.iter().all(|m| m.encoded_len() < 4 << 20));
    assert!(msgs[0].snapshot && msgs.iter().skip(1).all(|m| !m.snapshot));
    assert!(msgs.iter().rev().skip(1).all(|m| m.more) && !msgs[msgs.len() - 1].more);
    let v = view_of(&set);
    assert_eq!(v.objects().workloads.len(), 20_000);
}

#[test]
fn a_snapshot_reuses_the_objects_the_agent_holds() {
    let set = Encoder::default().for_node(1, &objects(), "a");
    let mut v = view_of(&set);
    let before = v.objects();
    for u in updates(2, None, &set, MAX_MESSAGE_BYTES) {
        v.apply(&u).expect("decodes");
    }
    let after = v.objects();
    assert_eq!(after, before);
    for (a, b) in after.workloads.iter().zip(&before.workloads) {
        assert!(Arc::ptr_eq(a, b), "{} decoded again", a.metadata.name);
    }
}
