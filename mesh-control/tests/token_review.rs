//! Node authentication by TokenReview against a test API server that answers as
//! the Kubernetes API server does for bound ServiceAccount tokens (no real cluster
//! can run here).
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use mesh_control::node_auth::NodeAuth;
use serde_json::{json, Value};

const AGENT: &str = "system:serviceaccount:ferrymesh-system:ferrymesh-agent";

/// The API server's answer for each token.
fn review(token: &str) -> Value {
    let user = |name: &str, node: &str| {
        json!({"authenticated": true, "audiences": ["ferrymesh"], "user": {
            "username": name,
            "extra": {"authentication.kubernetes.io/node-name": [node],
                      "authentication.kubernetes.io/pod-name": ["ferrymesh-agent-x"]}}})
    };
    let status = match token {
        "tok-a" => user(AGENT, "a"),
        "tok-other-sa" => user("system:serviceaccount:evil:app", "a"),
        _ => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}, "status": status})
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    assert_eq!(
        req.uri().path(),
        "/apis/authentication.k8s.io/v1/tokenreviews"
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(asked["spec"]["audiences"], json!(["ferrymesh"]), "{asked}");
    let token = asked["spec"]["token"].as_str().unwrap_or("");
    let mut r = Response::new(Full::new(Bytes::from(review(token).to_string())));
    *r.status_mut() = hyper::StatusCode::CREATED;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_nodes_own_agent_token_passes() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle)),
            );
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let auth = NodeAuth::TokenReview {
        client: kube::Client::try_from(config).expect("client"),
        audience: "ferrymesh".into(),
        username: AGENT.into(),
    };
    let ask = |node: &'static str, token: &'static str| {
        let auth = auth.clone();
        async move {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            auth.check(node, &m).await.map_err(|s| s.code())
        }
    };
    use tonic::Code::{PermissionDenied, Unauthenticated};
    assert_eq!(ask("a", "tok-a").await, Ok(()), "its own node");
    assert_eq!(
        ask("b", "tok-a").await,
        Err(PermissionDenied),
        "node a's token as node b"
    );
    assert_eq!(
        ask("a", "tok-other-sa").await,
        Err(PermissionDenied),
        "another ServiceAccount"
    );
    assert_eq!(ask("a", "bogus").await, Err(Unauthenticated), "not a token");
    assert_eq!(ask("a", "").await, Err(Unauthenticated), "empty");
}
