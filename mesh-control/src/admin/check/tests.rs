use super::*;
use mesh_model::config;

#[test]
fn check_explains() {
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {node: a, serviceAccount: web-sa, addresses: [10.0.0.1]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: legacy, namespace: plain}
spec: {node: a, addresses: [10.0.0.2]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: shy, namespace: shop, labels: {ferrymesh.io/dataplane-mode: none}}
spec: {node: a, addresses: [10.0.0.3]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIPs: [10.96.0.1], selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
"#;
    let o = config::parse("t", text).expect("config");
    let web = check(&o, "cluster.local", "shop", "web").expect("web");
    assert!(web.captured);
    assert_eq!(web.identity, "spiffe://cluster.local/ns/shop/sa/web-sa");
    assert_eq!(web.services, ["shop/web"]);
    assert_eq!(web.routes, ["HTTPRoute shop/web"]);
    assert_eq!(web.authorization_policies[0].name, "shop/get-only");
    assert!(web.l7);
    let legacy = check(&o, "cluster.local", "plain", "legacy").expect("legacy");
    assert!(!legacy.captured);
    assert!(
        legacy
            .reason
            .contains("no ferrymesh.io/dataplane-mode label"),
        "{legacy:?}"
    );
    let shy = check(&o, "cluster.local", "shop", "shy").expect("shy");
    assert!(shy.reason.contains("opts out"), "{shy:?}");
    assert!(check(&o, "cluster.local", "shop", "nobody").is_none());
}
