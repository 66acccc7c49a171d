//! Route status written back (Gateway API): for every HTTPRoute and GRPCRoute,
//! one `status.parents` entry per parentRef with the conditions
//! `mesh_model::l7::status` computes (`Accepted`; `ResolvedRefs` with
//! `RefNotPermitted`, `InvalidKind` or `BackendNotFound`). Written only when it
//! changed.
use std::collections::HashMap;

use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    Client,
};
use mesh_model::{
    l7::status::{self, RouteStatus},
    state::State,
};
use serde_json::{json, Value};

pub const CONTROLLER: &str = "ferrymesh.io/mesh";

/// A route's `status` as Kubernetes holds it (`now`: RFC 3339, the conditions'
/// transition time).
pub fn to_json(r: &RouteStatus, now: &str) -> Value {
    let parents: Vec<Value> = r
        .parents
        .iter()
        .map(|p| {
            let conditions: Vec<Value> = p
                .conditions
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "type": format!("{:?}", c.kind),
                        "status": if c.status { "True" } else { "False" },
                        "reason": c.reason, "message": c.message, "lastTransitionTime": now,
                    });
                    if let Some(g) = c.observed_generation {
                        v["observedGeneration"] = json!(g);
                    }
                    v
                })
                .collect();
            json!({
                "parentRef": serde_json::to_value(&p.parent_ref).unwrap_or(Value::Null),
                "controllerName": CONTROLLER,
                "conditions": conditions,
            })
        })
        .collect();
    json!({ "parents": parents })
}

/// Writes each route's status when it differs from what was last written. The
/// transition time is left out of the comparison.
pub async fn write(client: &Client, state: &State, last: &mut HashMap<String, Value>) {
    let now = rfc3339_now();
    for r in status::routes(&state.l7, &state.objects) {
        let key = format!("{} {}/{}", r.kind, r.namespace, r.name);
        let want = to_json(&r, "");
        if last.get(&key) == Some(&want) {
            continue;
        }
        let plural = if r.kind == "GRPCRoute" {
            "grpcroutes"
        } else {
            "httproutes"
        };
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", &r.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &r.namespace, &ar);
        let patch = json!({ "status": to_json(&r, &now) });
        match api
            .patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                last.insert(key, want);
            }
            Err(e) => tracing::warn!(route = %key, "route status not written: {e}"),
        }
    }
}

/// Now as RFC 3339 (UTC, seconds).
fn rfc3339_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

#[cfg(test)]
mod tests;
