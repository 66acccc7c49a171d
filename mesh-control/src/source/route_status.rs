//! Route status written back (Gateway API): for every HTTPRoute, one
//! `status.parents` entry per parentRef with `Accepted` (False:
//! `NotAllowedByListeners`, or `UnsupportedValue` for a route that does not build)
//! and `ResolvedRefs` (False: `RefNotPermitted` for a backendRef into another
//! namespace without a ReferenceGrant). Written only when it changed.
use std::collections::HashMap;

use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    Client,
};
use mesh_model::{model::HttpRoute, state::State};
use serde_json::{json, Value};

pub const CONTROLLER: &str = "ferrymesh.io/mesh";

fn condition(kind: &str, ok: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind, "status": if ok { "True" } else { "False" },
        "reason": reason, "message": message, "lastTransitionTime": now,
    })
}

/// The `status` a route should have under `state` (`now`: RFC 3339, for the
/// conditions' transition time).
pub fn status(state: &State, route: &HttpRoute, now: &str) -> Value {
    let label = format!(
        "HTTPRoute {}/{}",
        route.metadata.namespace(),
        route.metadata.name
    );
    let refused = state
        .fail_closed()
        .find(|(o, what)| *o == label && what.contains("refused"))
        .map(|(_, what)| what.clone());
    let not_permitted = state.l7.parents.values().any(|p| {
        p.entries
            .iter()
            .any(|e| e.rule.route == label && e.rule.backends.iter().any(|b| !b.permitted))
    });
    let parents: Vec<Value> = route
        .spec
        .parent_refs
        .iter()
        .map(|p| {
            let rejected = state
                .l7
                .rejected
                .iter()
                .find(|r| r.route == label && r.parent.ends_with(&format!("/{}", p.name)));
            let accepted = match (&refused, rejected) {
                (Some(why), _) => condition("Accepted", false, "UnsupportedValue", why, now),
                (None, Some(r)) => {
                    condition("Accepted", false, "NotAllowedByListeners", r.reason, now)
                }
                (None, None) => condition("Accepted", true, "Accepted", "attached", now),
            };
            let resolved = if not_permitted {
                condition(
                    "ResolvedRefs",
                    false,
                    "RefNotPermitted",
                    "a backendRef into another namespace has no ReferenceGrant",
                    now,
                )
            } else {
                condition(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all backendRefs resolved",
                    now,
                )
            };
            json!({
                "parentRef": serde_json::to_value(p).unwrap_or(Value::Null),
                "controllerName": CONTROLLER,
                "conditions": [accepted, resolved],
            })
        })
        .collect();
    json!({ "parents": parents })
}

/// Writes each route's status when it differs from what was last written. The
/// transition time is left out of the comparison.
pub async fn write(client: &Client, state: &State, last: &mut HashMap<String, Value>) {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    let now = rfc3339_now();
    for r in &state.objects.http_routes {
        let key = format!("{}/{}", r.metadata.namespace(), r.metadata.name);
        let want = status(state, r, "");
        if last.get(&key) == Some(&want) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), r.metadata.namespace(), &ar);
        let patch = json!({ "status": status(state, r, &now) });
        match api
            .patch_status(
                &r.metadata.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
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
