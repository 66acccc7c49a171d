//! The control plane's admin API (what `meshctl` reads): status of every node
//! agent, one node's config, and why a pod is (not) in the mesh.
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use mesh_model::{identity::Identity, model::Objects, scope, state::State};

use crate::distribution::{Current, Nodes};

pub struct Admin {
    pub current: Current,
    pub nodes: Nodes,
    pub trust_domain: String,
}

/// Why a pod is or is not in the mesh, and what applies to it. Pure.
pub fn check(objects: &Objects, trust_domain: &str, namespace: &str, name: &str) -> Option<Value> {
    let state = State::compile(0, Arc::new(objects.clone()), None).ok()?;
    let w = state
        .workloads
        .iter()
        .find(|w| w.namespace() == namespace && w.name() == name)?;
    let ns_mode = objects
        .namespaces
        .iter()
        .find(|n| n.metadata.name == namespace)
        .and_then(|n| {
            n.metadata
                .labels
                .get(mesh_model::model::DATAPLANE_MODE_LABEL)
                .cloned()
        });
    let pod_mode = w
        .labels()
        .get(mesh_model::model::DATAPLANE_MODE_LABEL)
        .cloned();
    let reason = match (w.captured, ns_mode.as_deref(), pod_mode.as_deref()) {
        (true, _, _) => "namespace labelled ambient".to_owned(),
        (false, _, Some("none")) => "the pod opts out (label none)".to_owned(),
        (false, Some(m), _) => format!("namespace label is {m:?}, not \"ambient\""),
        (false, None, _) => format!(
            "namespace {namespace} has no {} label",
            mesh_model::model::DATAPLANE_MODE_LABEL
        ),
    };
    let policies: Vec<Value> = w
        .policies
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "action": format!("{:?}", p.action).to_uppercase(),
                "l7": p.has_l7(),
            })
        })
        .collect();
    let services: Vec<String> = state
        .services_by_key
        .values()
        .filter(|s| {
            s.ports.iter().any(|p| {
                p.endpoints
                    .iter()
                    .any(|e| e.namespace() == w.namespace() && e.name() == w.name())
            })
        })
        .map(|s| s.key())
        .collect();
    let parent_of = |ns: &str, refs: &[mesh_model::model::ParentRef]| -> Vec<String> {
        refs.iter()
            .filter(|r| r.kind.as_deref() == Some("Service"))
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(ns), r.name))
            .collect()
    };
    let mut routes: Vec<String> = Vec::new();
    for r in &objects.http_routes {
        let ns = r.metadata.namespace();
        if parent_of(ns, &r.spec.parent_refs)
            .iter()
            .any(|p| services.contains(p))
        {
            routes.push(format!("HTTPRoute {ns}/{}", r.metadata.name));
        }
    }
    for r in &objects.grpc_routes {
        let ns = r.metadata.namespace();
        if parent_of(ns, &r.spec.parent_refs)
            .iter()
            .any(|p| services.contains(p))
        {
            routes.push(format!("GRPCRoute {ns}/{}", r.metadata.name));
        }
    }
    let mut services = services;
    services.sort();
    Some(json!({
        "pod": format!("{namespace}/{name}"),
        "node": w.node(),
        "captured": w.captured,
        "reason": reason,
        "identity": Identity::new(trust_domain, w.namespace(), w.service_account()).to_string(),
        "addresses": w.addresses(),
        "services": services,
        "authorization_policies": policies,
        "routes": routes,
        "l7": w.l7,
    }))
}

fn reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{v:#}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn route(admin: &Admin, path: &str) -> Response<Full<Bytes>> {
    let p = admin.current.borrow().clone();
    let (version, objects) = (p.version, p.objects);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "status"] => {
            let nodes = admin.nodes.lock().map(|n| n.clone()).unwrap_or_default();
            reply(
                StatusCode::OK,
                json!({"version": version, "seen_unix_ms": p.seen_unix_ms, "nodes": nodes}),
            )
        }
        ["v1", "config", node] => {
            let set = scope::Encoder::default().for_node(version, &objects, node);
            let items: Vec<Value> = set
                .iter()
                .map(|(k, e)| {
                    let object: Value = serde_json::from_slice(&e.json).unwrap_or_default();
                    json!({"kind": k.kind.as_str(), "namespace": k.namespace, "name": k.name, "object": object})
                })
                .collect();
            reply(
                StatusCode::OK,
                json!({"version": version, "node": node, "objects": items}),
            )
        }
        ["v1", "check", ns, name] => match check(&objects, &admin.trust_domain, ns, name) {
            Some(v) => reply(StatusCode::OK, v),
            None => reply(
                StatusCode::NOT_FOUND,
                json!({"error": format!("no pod {ns}/{name} in the control plane's config (version {version})")}),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "try /v1/status, /v1/config/<node>, /v1/check/<namespace>/<pod>"}),
        ),
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = route(&admin, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(web["captured"], true);
        assert_eq!(web["identity"], "spiffe://cluster.local/ns/shop/sa/web-sa");
        assert_eq!(web["services"], json!(["shop/web"]));
        assert_eq!(web["routes"], json!(["HTTPRoute shop/web"]));
        assert_eq!(web["authorization_policies"][0]["name"], "shop/get-only");
        assert_eq!(web["l7"], true);
        let legacy = check(&o, "cluster.local", "plain", "legacy").expect("legacy");
        assert_eq!(legacy["captured"], false);
        assert!(
            legacy["reason"]
                .as_str()
                .unwrap_or("")
                .contains("no ferrymesh.io/dataplane-mode label"),
            "{legacy}"
        );
        let shy = check(&o, "cluster.local", "shop", "shy").expect("shy");
        assert!(
            shy["reason"].as_str().unwrap_or("").contains("opts out"),
            "{shy}"
        );
        assert!(check(&o, "cluster.local", "shop", "nobody").is_none());
    }
}
