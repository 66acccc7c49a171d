use std::net::SocketAddr;

use super::*;
use mesh_model::config;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {node: a, addresses: [198.19.1.10]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {node: a, addresses: [198.19.1.11]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {node: a, addresses: [198.19.1.12]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [198.18.100.1]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}, {port: 81, targetPort: 8081, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIPs: [198.18.100.2]
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIPs: [198.18.100.3]
  selector: {app: api}
  ports: [{port: 80}]
"#;

fn state(extra: &str) -> State {
    State::build(
        1,
        config::parse("t", &format!("{BASE}---\n{extra}")).expect("config"),
    )
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn which_connections_go_to_the_waypoint() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, name: web, port: 80}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n";
    let l7_policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: api}}\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n";
    let l4_policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: api}}\n  rules: [{to: [{operation: {ports: [\"80\"]}}]}]\n";
    let traffic = "apiVersion: ferrymesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, name: db}]\n  timeout: {request: 1s}\n";
    let cases: [(&str, &str, &str, bool); 9] = [
        ("no L7 config: L4", "", "198.18.100.1:80", false),
        ("appProtocol http", "", "198.18.100.1:81", true),
        ("route on the port", route, "198.18.100.1:80", true),
        (
            "route bound to another port",
            route,
            "198.18.100.1:81",
            true,
        ),
        (
            "L7 policy on the endpoints",
            l7_policy,
            "198.18.100.3:80",
            true,
        ),
        (
            "L7 policy, pod addressed directly",
            l7_policy,
            "198.19.1.12:80",
            true,
        ),
        (
            "L4-only policy stays L4",
            l4_policy,
            "198.18.100.3:80",
            false,
        ),
        (
            "TrafficPolicy on the Service",
            traffic,
            "198.18.100.2:5432",
            true,
        ),
        ("unknown address", route, "203.0.113.1:80", false),
    ];
    for (name, extra, addr, want) in cases {
        let s = state(extra);
        assert_eq!(decide(&s, sa(addr)).is_some(), want, "{name}");
    }
}
