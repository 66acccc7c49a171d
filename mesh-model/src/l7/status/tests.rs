use super::*;
use crate::{config, l7::table::Table};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: app}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: backend}
spec: {ports: [{port: 8080}]}
"#;

fn route(name: &str, parent: &str, backends: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{parent}]\n  rules:\n  - backendRefs: [{{name: v1, port: 8080}}]\n  - matches: [{{path: {{type: PathPrefix, value: /b}}}}]\n    backendRefs: [{backends}]\n"
    )
}

const GRANT: &str = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]\n  to: [{group: \"\", kind: Service}]\n";

/// (what, config after the Services, Accepted (status, reason), ResolvedRefs (status, reason)).
type StatusCase = (
    &'static str,
    String,
    (bool, &'static str),
    (bool, &'static str),
);

#[test]
fn conditions_carry_the_gateway_api_reasons() {
    let svc = "{group: \"\", kind: Service, name: web, port: 80}";
    let gw = "{name: edge}";
    let cases: Vec<StatusCase> = vec![
        (
            "all refs resolve",
            route("r", svc, "{name: v1, port: 8080}"),
            (true, "Accepted"),
            (true, "ResolvedRefs"),
        ),
        (
            "HTTPRouteInvalidCrossNamespaceBackendRef: no grant",
            route("r", gw, "{name: other, namespace: backend, port: 8080}"),
            (true, "Accepted"),
            (false, "RefNotPermitted"),
        ),
        (
            "HTTPRouteReferenceGrant: the grant permits it",
            route("r", gw, "{name: other, namespace: backend, port: 8080}") + GRANT,
            (true, "Accepted"),
            (true, "ResolvedRefs"),
        ),
        (
            "MeshConsumerRoute: a consumer route sends to its own parent Service",
            route(
                "r",
                "{group: \"\", kind: Service, name: other, namespace: backend, port: 8080}",
                "{name: other, namespace: backend, port: 8080}",
            ),
            (true, "Accepted"),
            (true, "ResolvedRefs"),
        ),
        (
            "HTTPRouteInvalidBackendRefUnknownKind",
            route(
                "r",
                gw,
                "{group: unknown.example, kind: Unknown, name: v1, port: 8080}",
            ),
            (true, "Accepted"),
            (false, "InvalidKind"),
        ),
        (
            "HTTPRouteInvalidNonExistentBackendRef",
            route("r", gw, "{name: nothing, port: 8080}"),
            (true, "Accepted"),
            (false, "BackendNotFound"),
        ),
        (
            "another namespace's Gateway",
            route(
                "r",
                "{name: edge, namespace: backend}",
                "{name: v1, port: 8080}",
            ),
            (false, "NotAllowedByListeners"),
            (true, "ResolvedRefs"),
        ),
        (
            "a route that does not build",
            route("r", svc, "{name: v1, port: 8080}").replace("value: /b", "value: no-slash"),
            (false, "UnsupportedValue"),
            (true, "ResolvedRefs"),
        ),
    ];
    for (what, extra, accepted, resolved) in cases {
        let objects = config::parse("t", &format!("{SERVICES}{extra}")).expect(what);
        let table = Table::build(&objects).expect(what);
        let all = routes(&table, &objects);
        assert_eq!(all.len(), 1, "{what}");
        let got = |k| {
            let c = all[0].condition(0, k).expect(what);
            (c.status, c.reason.as_str())
        };
        assert_eq!(got(ConditionType::Accepted), accepted, "{what}");
        assert_eq!(got(ConditionType::ResolvedRefs), resolved, "{what}");
    }
}
