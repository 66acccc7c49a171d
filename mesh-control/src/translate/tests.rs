use super::*;

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).expect("pod json")
}

#[test]
fn pods() {
    let base = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": "shop", "uid": "1", "resourceVersion": "12", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "serviceAccountName": "web", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}]}
    });
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        f(&mut v);
        pod(v)
    };
    // (name, pod, Some((node, service account, addresses)) or None)
    type Want<'a> = Option<(&'a str, &'a str, usize)>;
    let cases: Vec<(&str, Pod, Want)> = vec![
        (
            "running, dual stack",
            pod(base.clone()),
            Some(("node-a", "web", 2)),
        ),
        (
            "no service account: default",
            with(&|v| {
                v["spec"]
                    .as_object_mut()
                    .map(|s| s.remove("serviceAccountName"));
            }),
            Some(("node-a", "default", 2)),
        ),
        (
            "pending, not scheduled",
            with(&|v| {
                v["spec"].as_object_mut().map(|s| s.remove("nodeName"));
            }),
            None,
        ),
        (
            "no IP yet",
            with(&|v| {
                v["status"] = serde_json::json!({"phase": "Pending"});
            }),
            None,
        ),
        (
            "host network",
            with(&|v| v["spec"]["hostNetwork"] = true.into()),
            None,
        ),
        (
            "succeeded",
            with(&|v| v["status"]["phase"] = "Succeeded".into()),
            None,
        ),
        (
            "only podIP",
            with(&|v| {
                v["status"].as_object_mut().map(|s| s.remove("podIPs"));
            }),
            Some(("node-a", "web", 1)),
        ),
    ];
    for (name, p, want) in cases {
        let got = workload(&p).map(|w| {
            (
                w.spec.node.clone(),
                w.spec.service_account.clone(),
                w.spec.addresses.len(),
            )
        });
        let want = want.map(|(n, sa, k)| (n.to_owned(), sa.to_owned(), k));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn pod_annotations_the_agents_read_are_kept() {
    let base = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": "shop"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.5"}
    });
    // The fast-path annotation reaches the agents; others (kubectl's
    // last-applied configuration) are dropped.
    let mut v = base.clone();
    v["metadata"]["annotations"] = serde_json::json!({
        "ferrymesh.io/fast-path": "true",
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
    });
    let w = workload(&pod(v)).expect("workload");
    assert!(w.metadata.fast_path());
    assert_eq!(w.metadata.annotations.iter().count(), 1);
    assert!(!workload(&pod(base)).expect("workload").metadata.fast_path());
}

#[test]
fn services() {
    let s: KService = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"], "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "appProtocol": "http"},
                           {"name": "dns", "port": 53, "protocol": "UDP"},
                           {"name": "named", "port": 9090, "targetPort": "metrics"}]}
    }))
    .expect("service json");
    let m = service(&s).expect("service");
    assert_eq!(m.spec.cluster_ips.len(), 2);
    let ports: Vec<(u16, Option<u16>)> = m
        .spec
        .ports
        .iter()
        .map(|p| (p.port, p.target_port))
        .collect();
    assert_eq!(
        ports,
        [(80, Some(8080)), (9090, None)],
        "UDP left out; a named targetPort falls back to the port"
    );
    assert_eq!(m.spec.ports[0].app_protocol.as_deref(), Some("http"));
    let headless: KService = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
    }))
    .expect("json");
    assert!(service(&headless).is_none(), "headless: nothing to capture");
}

#[test]
fn custom_resources() {
    let route: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u", "generation": 3, "managedFields": []},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                 "rules": [{"backendRefs": [{"name": "web-v1", "port": 80, "weight": 90}]}]},
        "status": {"parents": []}
    }))
    .expect("json");
    let r: model::HttpRoute = custom(&route).expect("route");
    assert_eq!(r.spec.rules[0].backend_refs[0].weight, 90);
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "typo", "namespace": "shop"},
        "spec": {"parentRefs": [], "rulez": []}
    }))
    .expect("json");
    let e = custom::<model::HttpRoute>(&bad).expect_err("unknown field");
    assert!(
        e.contains("HTTPRoute shop/typo") && e.contains("rulez"),
        "{e}"
    );
    let mut inputs = Inputs::default();
    inputs.custom.insert("HTTPRoute".into(), vec![route, bad]);
    let (o, problems) = objects(&inputs);
    assert_eq!(o.http_routes.len(), 1, "the good one applies");
    assert_eq!(problems.len(), 1, "the bad one is reported");
}

#[test]
fn unreadable_security_objects_are_replaced_fail_closed() {
    let obj = |kind: &str, name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec,
        }))
        .expect("json")
    };
    let mut inputs = Inputs::default();
    inputs.custom.insert(
        "AuthorizationPolicy".into(),
        vec![
            obj("AuthorizationPolicy", "allow", serde_json::json!({"selector": {"matchLabels": {"app": "db"}}, "rules": "not a list"})),
            obj("AuthorizationPolicy", "deny", serde_json::json!({"action": "DENY", "rules": 7})),
            obj("AuthorizationPolicy", "audit", serde_json::json!({"action": "AUDIT", "rules": 7})),
        ],
    );
    inputs.custom.insert(
        "PeerAuthentication".into(),
        vec![obj(
            "PeerAuthentication",
            "pa",
            serde_json::json!({"mtls": "STRICT please"}),
        )],
    );
    let (o, problems) = objects(&inputs);
    assert_eq!(problems.len(), 4, "{problems:?}");
    let by = |n: &str| {
        o.authorization_policies
            .iter()
            .find(|p| p.metadata.name == n)
            .cloned()
    };
    let allow = by("allow").expect("allow stand-in");
    assert_eq!(
        (allow.spec.action, allow.spec.rules.len()),
        (model::Action::Allow, 0),
        "allows nothing"
    );
    assert!(
        allow.spec.selector.is_some(),
        "its readable selector is kept"
    );
    let deny = by("deny").expect("deny stand-in");
    assert_eq!(
        (deny.spec.action, deny.spec.rules.len()),
        (model::Action::Deny, 1),
        "denies all"
    );
    assert!(by("audit").is_none(), "AUDIT changes no access");
    assert_eq!(
        o.peer_authentications[0].spec.mtls.mode,
        model::MtlsMode::Strict
    );
}

#[test]
fn a_terminating_pod_gives_its_shared_address_to_its_successor() {
    let pod = |name: &str, deleting: bool| -> Pod {
        let mut v = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "podIP": "10.244.1.5"}
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
        }
        serde_json::from_value(v).expect("pod")
    };
    let inputs = Inputs {
        pods: vec![pod("a-old", true), pod("b-new", false)],
        ..Inputs::default()
    };
    let (o, problems) = objects(&inputs);
    let names: Vec<&str> = o
        .workloads
        .iter()
        .map(|w| w.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["b-new"]);
    assert!(problems[0].contains("shop/a-old left out"), "{problems:?}");
    mesh_model::config::validate_objects("cluster", &o).expect("a valid config");
}
