use mesh_model::{
    identity::Identity,
    model::Labels,
    state::State,
    testing::{config, namespace, service, workload},
};

use super::*;

/// Label pairs of a table case.
type Kv<'a> = &'a [(&'a str, &'a str)];

fn labels(kv: Kv<'_>) -> Labels {
    let mut l = Labels::new();
    for (k, v) in kv {
        l.insert((*k).into(), (*v).into());
    }
    l
}

#[test]
fn workload_names_as_istio_derives_them() {
    let cases: &[(&str, Kv<'_>, &str)] = &[
        // A Deployment's pod: name minus "-<pod-template-hash>-<suffix>".
        (
            "reviews-v1-5fd6d4f8f8-knbht",
            &[("pod-template-hash", "5fd6d4f8f8")],
            "reviews-v1",
        ),
        // The hash label does not match the name: the pod is its own workload.
        (
            "reviews-v1-abc-knbht",
            &[("pod-template-hash", "zzz")],
            "reviews-v1-abc-knbht",
        ),
        // A bare pod, or a StatefulSet's.
        ("db-0", &[], "db-0"),
        // The hash at the very start names no workload.
        ("-h-x", &[("pod-template-hash", "h")], "-h-x"),
    ];
    for (pod, l, want) in cases {
        assert_eq!(workload_name(pod, &labels(l)), *want, "{pod}");
    }
}

#[test]
fn canonical_service_and_revision_fall_back_as_istio_does() {
    let cases: &[(Kv<'_>, &str, &str)] = &[
        (
            &[
                ("service.istio.io/canonical-name", "cn"),
                ("app.kubernetes.io/name", "kn"),
                ("app", "a"),
                ("service.istio.io/canonical-revision", "cr"),
                ("app.kubernetes.io/version", "kv"),
                ("version", "v"),
            ],
            "cn",
            "cr",
        ),
        (
            &[
                ("app.kubernetes.io/name", "kn"),
                ("app", "a"),
                ("app.kubernetes.io/version", "kv"),
                ("version", "v"),
            ],
            "kn",
            "kv",
        ),
        (&[("app", "a"), ("version", "v")], "a", "v"),
        (&[], "the-workload", "latest"),
    ];
    for (l, service, revision) in cases {
        let l = labels(l);
        assert_eq!(canonical_service(&l, "the-workload"), *service);
        assert_eq!(canonical_revision(&l), *revision);
    }
}

fn state() -> State {
    let objects = config()
        .with(namespace("shop").ambient())
        .with(service("shop", "reviews").vip("10.96.0.10").port(80, 8080))
        .with(
            workload("shop", "reviews-v2-77f9d-x8k2p")
                .node("a")
                .addr("198.19.1.10")
                .service_account("reviews")
                .label("app", "reviews")
                .label("version", "v2")
                .label("pod-template-hash", "77f9d"),
        );
    State::compile(1, std::sync::Arc::new(objects), None).expect("state")
}

#[test]
fn a_peer_gets_a_workloads_labels_only_with_its_identity() {
    let s = state();
    let ip = Some("198.19.1.10".parse().unwrap());
    let reviews = Identity::new("cluster.local", "shop", "reviews");
    let p = Peer::of(&s, ip, Some(&reviews));
    assert_eq!(
        (p.workload.as_str(), p.app.as_str(), p.version.as_str()),
        ("reviews-v2", "reviews", "v2")
    );
    assert_eq!(p.canonical_service, "reviews");
    assert_eq!(p.canonical_revision, "v2");
    assert_eq!(p.principal, "spiffe://cluster.local/ns/shop/sa/reviews");
    // Another identity at that address: its own namespace and principal, nothing
    // borrowed from the workload there.
    let other = Identity::new("cluster.local", "evil", "x");
    let p = Peer::of(&s, ip, Some(&other));
    assert_eq!(
        (p.namespace.as_str(), p.workload.as_str()),
        ("evil", UNKNOWN)
    );
    assert_eq!(p.app, UNKNOWN);
    // No identity (a plaintext client): nothing but unknown, whatever its address.
    assert_eq!(Peer::of(&s, ip, None), Peer::unknown());
}

#[test]
fn service_names_only_for_services_the_config_has() {
    let objects = config()
        .with(namespace("shop").ambient())
        .with(service("shop", "reviews").vip("10.96.0.10").port(80, 8080))
        .with(workload("shop", "db-0").node("a").addr("198.19.1.11"));
    let s = State::compile(1, std::sync::Arc::new(objects), None).expect("state");
    let r = ServiceName::of_key(&s, "shop/reviews");
    assert_eq!(
        (r.fqdn.as_str(), r.name.as_str(), r.namespace.as_str()),
        ("reviews.shop.svc.cluster.local", "reviews", "shop")
    );
    for other in ["", "shop/db-0", "Gateway shop/gw", "evil/reviews"] {
        assert_eq!(
            ServiceName::of_key(&s, other),
            ServiceName::unknown(),
            "{other:?}"
        );
    }
}

#[test]
fn istio_names_unprefixed_and_the_agents_own_under_ferrymesh() {
    let mut t = crate::telemetry::Telemetry::new("east");
    let own = prometheus_client::metrics::counter::Counter::<u64>::default();
    t.registry().register("probe", "a probe", own.clone());
    own.inc();
    let s = state();
    let id = Identity::new("cluster.local", "shop", "reviews");
    let peer = Peer::of(&s, Some("198.19.1.10".parse().unwrap()), Some(&id));
    let labels = Traffic {
        reporter: Reporter::Destination,
        source: &Peer::unknown(),
        destination: &peer,
        service: &ServiceName::of_key(&s, "shop/reviews"),
        cluster: &t.cluster,
        protocol: "tcp",
        flags: "-",
        security: Security::MutualTls,
    }
    .labels();
    t.tcp_opened.get_or_create(&labels).inc();
    let text = t.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap_or_else(|| panic!("{text}"));
    for want in [
        r#"reporter="destination""#,
        r#"destination_workload="reviews-v2""#,
        r#"destination_version="v2""#,
        r#"destination_service="reviews.shop.svc.cluster.local""#,
        r#"source_workload="unknown""#,
        r#"destination_cluster="east""#,
        r#"connection_security_policy="mutual_tls""#,
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    assert!(text.contains("ferrymesh_probe_total 1"), "{text}");
}
