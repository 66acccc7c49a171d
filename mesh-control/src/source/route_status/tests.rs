//! The status writer against a stand-in for the Kubernetes API server that
//! answers patches as it does (the patched object back) and records them.
use std::sync::{Arc, Mutex};

use super::*;
use mesh_model::config;

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn answer(req: hyper::Request<hyper::body::Incoming>, seen: Seen) -> http::Response<String> {
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let body = http_body_util::BodyExt::collect(req.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.lock()
        .expect("lock")
        .push((method, path.clone(), patch));
    // /apis/gateway.networking.k8s.io/v1/namespaces/NS/PLURAL/NAME/status
    let p: Vec<&str> = path.split('/').collect();
    let kind = if p.get(6) == Some(&"grpcroutes") {
        "GRPCRoute"
    } else {
        "HTTPRoute"
    };
    let object = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
        "metadata": {"namespace": p.get(5), "name": p.get(7)},
    });
    http::Response::builder()
        .header("content-type", "application/json")
        .body(object.to_string())
        .expect("response")
}

async fn api_server() -> (String, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let seen = Seen::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let seen = recorded.clone();
            let svc = hyper::service::service_fn(move |req| {
                let seen = seen.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, seen).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), svc),
            );
        }
    });
    (url, seen)
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app, generation: 3}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: other, namespace: backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: app}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;

#[tokio::test]
async fn conditions_are_patched_into_status_once_per_change() {
    let (url, seen) = api_server().await;
    let client = Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let objects = Arc::new(config::parse("t", OBJECTS).expect("config"));
    let state = State::compile(0, objects, None).expect("state");
    let mut last = HashMap::new();
    write(&client, &state, &mut last).await;
    // Unchanged: not patched again.
    write(&client, &state, &mut last).await;
    let seen = seen.lock().expect("lock").clone();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "PATCH",
                "/apis/gateway.networking.k8s.io/v1/namespaces/app/httproutes/r/status"
            ),
            (
                "PATCH",
                "/apis/gateway.networking.k8s.io/v1/namespaces/app/grpcroutes/g/status"
            ),
        ]
    );
    let parent = &seen[0].2["status"]["parents"][0];
    assert_eq!(parent["controllerName"], CONTROLLER);
    assert_eq!(parent["parentRef"]["name"], "edge");
    let c = &parent["conditions"];
    assert_eq!(
        (&c[0]["type"], &c[0]["status"]),
        (&json!("Accepted"), &json!("True"))
    );
    assert_eq!(
        (&c[1]["type"], &c[1]["status"], &c[1]["reason"]),
        (
            &json!("ResolvedRefs"),
            &json!("False"),
            &json!("RefNotPermitted")
        )
    );
    assert!(
        c[1]["lastTransitionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{c}"
    );
    let g = &seen[1].2["status"]["parents"][0]["conditions"][1];
    assert_eq!(
        (&g["status"], &g["reason"]),
        (&json!("True"), &json!("ResolvedRefs"))
    );
}
