//! The control plane's admin API (what `meshctl` reads), on the shared admin
//! server: status of every node agent, one node's config, and why a pod is (not)
//! in the mesh. The answers are the types in `api`.
use std::sync::Arc;

use hyper::StatusCode;
use mesh_infra::admin::Reply;
use mesh_model::scope;
use tokio::net::TcpListener;

use crate::distribution::{Current, Nodes};

pub mod api;
mod check;

pub use check::check;

pub struct Admin {
    pub current: Current,
    pub nodes: Nodes,
    pub trust_domain: String,
}

fn error(status: StatusCode, error: String) -> Reply {
    Reply::json_with(status, &api::ApiError { error })
}

fn node_config(version: u64, objects: &mesh_model::model::Objects, node: &str) -> api::NodeConfig {
    let set = scope::Encoder::default().for_node(version, objects, node);
    let objects = set
        .iter()
        .map(|(k, e)| api::ConfigObject {
            kind: k.kind.as_str().to_owned(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            object: serde_json::from_slice(&e.json).unwrap_or_default(),
        })
        .collect();
    api::NodeConfig {
        version,
        node: node.to_owned(),
        objects,
    }
}

/// What agents will refuse, leave unattached or enforce fail-closed in `objects`
/// (compiled as they compile it).
pub fn problems(objects: &mesh_model::model::Objects) -> Vec<api::Problem> {
    let all = std::sync::Arc::new(objects.clone());
    match mesh_model::state::State::compile(0, all, None) {
        Err(e) => vec![api::Problem {
            object: format!("{} {}", e.kind, e.name),
            problem: format!("{}: the whole config is refused", e.message),
        }],
        Ok(state) => state
            .fail_closed()
            .map(|(object, what)| api::Problem {
                object: object.clone(),
                problem: what.clone(),
            })
            .chain(state.l7.rejected.iter().map(|r| api::Problem {
                object: r.route.clone(),
                problem: format!("not attached to {}: {}", r.parent, r.reason),
            }))
            .collect(),
    }
}

/// The Gateway API status of every route in `objects` (empty when the whole
/// config is refused: `problems` says why).
pub fn routes(objects: &mesh_model::model::Objects) -> Vec<mesh_model::l7::status::RouteStatus> {
    let all = std::sync::Arc::new(objects.clone());
    match mesh_model::state::State::compile(0, all, None) {
        Err(_) => Vec::new(),
        Ok(state) => mesh_model::l7::status::routes(&state.l7, &state.objects),
    }
}

fn route(admin: &Admin, path: &str) -> Reply {
    let p = admin.current.borrow().clone();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "status"] => {
            let nodes = admin.nodes.lock().map(|n| n.clone()).unwrap_or_default();
            Reply::json(&api::Status {
                version: p.version,
                seen_unix_ms: p.seen_unix_ms,
                nodes,
            })
        }
        ["v1", "config", node] => Reply::json(&node_config(p.version, &p.objects, node)),
        ["v1", "problems"] => Reply::json(&api::Problems {
            version: p.version,
            problems: problems(&p.objects),
        }),
        ["v1", "routes"] => Reply::json(&api::Routes {
            version: p.version,
            routes: routes(&p.objects),
        }),
        ["v1", "check", ns, name] => match check(&p.objects, &admin.trust_domain, ns, name) {
            Some(c) => Reply::json(&c),
            None => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no pod {ns}/{name} in the control plane's config (version {})",
                    p.version
                ),
            ),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "try /v1/status, /v1/problems, /v1/routes, /v1/config/<node>, /v1/check/<namespace>/<pod>".into(),
        ),
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    mesh_infra::admin::serve(listener, Arc::new(move |path: &str| route(&admin, path))).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn problems_name_each_object_and_why() {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec: {action: CUSTOM, provider: {name: ext-authz}, rules: [{}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sneaky, namespace: evil}
spec:
  parentRefs: [{name: edge, namespace: prod}]
  rules: [{backendRefs: [{name: sink, port: 80}]}]
"#;
        let objects = mesh_model::config::parse("t", yaml).expect("config");
        let p = super::problems(&objects);
        assert!(
            p.iter().any(|x| x.object == "AuthorizationPolicy shop/ext" && x.problem.contains("CUSTOM")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.object == "HTTPRoute evil/sneaky"
                && x.problem.contains("NotAllowedByListeners")),
            "{p:?}"
        );
    }
}
