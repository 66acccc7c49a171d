//! Istio's AuthorizationPolicy semantics through real connections: an ALLOW with
//! an L4 `when` key is judged at L4 (mTLS and plaintext alike), an L7-only DENY is
//! judged per request where L7 runs and keeps its L4 part where only L4 decides
//! (ztunnel's rule), and a dry-run policy is logged and counted, never enforced.
mod common;

use common::two_node_lab;
use ferrymesh_tests::Lab;

const ALLOW_8080: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-8080, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - when: [{key: destination.port, values: ["8080"]}]
---
"#;

const DENY_POST: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-post, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {methods: [POST]}}]
---
"#;

const DRY_RUN_DENY_ALL: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny-all
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{}]
---
"#;

/// A TCP echo of 1 KiB from `pod` to `to` came back whole (a refusal is a reset).
fn echoes(lab: &Lab, pod: &str, to: &str) -> bool {
    lab.run_client(pod, &["connect", "--to", to, "--bytes", "1024"])
        .is_ok_and(|r| r["received"] == 1024)
}

/// curl from `pod`: the HTTP status, 0 when the connection was refused or reset.
fn status(lab: &Lab, pod: &str, args: &[&str]) -> u16 {
    let mut all = vec![
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "10",
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    let out = lab.run_in_pod(pod, "curl", &all).expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn l4_when_and_l7_only_deny_behave_as_in_istio() {
    let mut lab = two_node_lab();
    let _http = lab
        .http_server("server", "server", &[])
        .expect("http server");
    let _echo = lab.server("server", &[7070]).expect("echo server");
    let ip = lab.pod("server").addr4(8080).ip().to_string();
    let http = format!("http://{ip}:8080/x");
    let tcp = lab.pod("server").addr4(7070).to_string();
    // No policy: both ports answer, from the mesh and from outside it.
    for pod in ["client", "outsider"] {
        assert_eq!(status(&lab, pod, &[&http]), 200, "{pod} to 8080");
        assert!(echoes(&lab, pod, &tcp), "{pod} to 7070");
    }

    // ALLOW when destination.port 8080: an L4 key, judged at L4 for mTLS and
    // plaintext sources alike.
    lab.apply_config(ALLOW_8080).expect("policy applied");
    let denied = lab.counter("b", "shop/server", "inbound_denied").unwrap();
    for pod in ["client", "outsider"] {
        assert_eq!(status(&lab, pod, &[&http]), 200, "{pod}: 8080 allowed");
        assert!(!echoes(&lab, pod, &tcp), "{pod}: 7070 refused at L4");
    }
    assert_eq!(
        lab.counter("b", "shop/server", "inbound_denied").unwrap(),
        denied + 2
    );

    // DENY methods POST (HTTP only) beside it: mTLS requests are judged one by
    // one at the destination; a plaintext connection, which nothing judges per
    // request, is refused on the DENY's L4 part (empty: all of it).
    lab.apply_config(&format!("{ALLOW_8080}{DENY_POST}"))
        .expect("policies applied");
    assert_eq!(status(&lab, "client", &[&http]), 200, "GET allowed");
    assert_eq!(
        status(&lab, "client", &["-X", "POST", &http]),
        403,
        "POST denied per request"
    );
    assert_eq!(
        status(&lab, "outsider", &[&http]),
        0,
        "plaintext refused at L4"
    );
    let log = lab.agent_log("b");
    assert!(
        log.contains("request denied: denied by policy shop/no-post")
            && log.contains("connection refused: denied by policy shop/no-post"),
        "{log}"
    );

    // Dry run: evaluated, logged and counted, never enforced.
    lab.apply_config(&format!("{ALLOW_8080}{DRY_RUN_DENY_ALL}"))
        .expect("dry run applied");
    assert_eq!(
        status(&lab, "client", &[&http]),
        200,
        "dry run not enforced"
    );
    assert_eq!(
        status(&lab, "outsider", &[&http]),
        200,
        "dry run not enforced"
    );
    let m = lab.metrics("b").unwrap();
    let would_deny = |layer: &str| {
        m.lines().any(|l| {
            l.starts_with("ferrymesh_authz_dry_run_total{")
                && l.contains(&format!("layer=\"{layer}\""))
                && l.contains("result=\"would_deny\"")
                && !l.ends_with(" 0")
        })
    };
    assert!(would_deny("l4"), "{m}");
    assert!(lab.agent_log("b").contains("dry run: would_deny"));
}

const SERVICE_ALLOW_CLIENT: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-svc-clients, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: server}]
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
---
"#;

const SERVICE_DENY_ADMIN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-svc-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: server}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
---
"#;

#[test]
fn a_policy_attached_to_a_service_judges_what_is_addressed_to_it() {
    let mut lab = two_node_lab();
    let _http = lab
        .http_server("server", "server", &[])
        .expect("http server");
    let vip = format!("http://{}:80", lab.service("server").vip4);
    let pod = format!("http://{}", lab.pod("server").addr4(8080));

    // At L4, where the connection leaves: only the client may use the Service;
    // the pod addressed directly is not the Service.
    lab.apply_config(SERVICE_ALLOW_CLIENT)
        .expect("policy applied");
    assert_eq!(status(&lab, "client", &[&format!("{vip}/x")]), 200);
    assert_eq!(
        status(&lab, "other", &[&format!("{vip}/x")]),
        0,
        "refused at L4"
    );
    assert_eq!(status(&lab, "other", &[&format!("{pod}/x")]), 200);
    assert!(
        lab.agent_log("a").contains("service shop/server"),
        "the refusal names the Service"
    );

    // An HTTP rule: the Service's requests are judged at the waypoint.
    lab.apply_config(SERVICE_DENY_ADMIN)
        .expect("policy applied");
    assert_eq!(status(&lab, "client", &[&format!("{vip}/admin")]), 403);
    assert_eq!(status(&lab, "client", &[&format!("{vip}/x")]), 200);
    assert_eq!(status(&lab, "client", &[&format!("{pod}/admin")]), 200);
}
