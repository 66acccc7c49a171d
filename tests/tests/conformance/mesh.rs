//! The Mesh profile: upstream's mesh tests (GAMMA routes on Services, requests
//! from meshed pods), and the HTTPRoute tests named in issue 17 run as GAMMA
//! routes (`<upstream name> (GAMMA)`).
use crate::{get, Suite, ECHO, ECHO_V1};

pub const MESH: &str = "gateway-conformance-mesh";

pub const TESTS: &[crate::Test] = &[
    ("MeshConsumerRoute", consumer_route),
    ("MeshGRPCRouteWeight", grpc_route_weight),
    (
        "MeshGRPCRouteRequestHeaderModifier",
        grpc_route_request_header_modifier,
    ),
    (
        "HTTPRouteMatchingAcrossRoutes (GAMMA)",
        matching_across_routes,
    ),
    ("HTTPRouteTimeoutRequest (GAMMA)", timeout_request),
    (
        "HTTPRouteInvalidCrossNamespaceBackendRef (GAMMA)",
        invalid_cross_namespace_backend_ref,
    ),
    (
        "HTTPRouteRequestHeaderModifierBackendWeights (GAMMA)",
        header_modifier_backend_weights,
    ),
];

/// A route of `kind` in `ns` on Service `parent` of the mesh namespace.
pub fn route(
    kind: &str,
    ns: &str,
    name: &str,
    parent: &str,
    extra_spec: &str,
    rules: &str,
) -> String {
    let port = if kind == "GRPCRoute" { 9090 } else { 80 };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: {parent}, namespace: {MESH}, port: {port}}}]\n{extra_spec}  rules:\n{rules}---\n"
    )
}

fn consumer_route(s: &mut Suite) {
    s.apply(&route(
        "HTTPRoute",
        "gateway-conformance-mesh-consumer",
        "mesh-consumer-route",
        "echo-v1",
        "",
        &format!("  - filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: X-Header-Set, value: set}}]}}}}]\n    backendRefs: [{{name: echo-v1, namespace: {MESH}, port: 80}}]\n"),
    ));
    let (accepted, _) = s.condition(
        "HTTPRoute",
        "gateway-conformance-mesh-consumer",
        "mesh-consumer-route",
        "Accepted",
    );
    assert!(accepted);
    let req = get("echo-v1.gateway-conformance-mesh", "/");
    // Requests from the consumer route's namespace are modified by it...
    let r = s.mesh("consumer-client", ECHO_V1, &req);
    assert_eq!((r.code, r.backend()), (200, "echo-v1"), "{r:?}");
    assert_eq!(r.header("x-header-set"), Some("set"), "{r:?}");
    // ...requests from elsewhere are not.
    let r = s.mesh("mesh-client", ECHO_V1, &req);
    assert_eq!((r.code, r.backend()), (200, "echo-v1"), "{r:?}");
    assert_eq!(r.header("x-header-set"), None, "{r:?}");
}

fn grpc_route_weight(s: &mut Suite) {
    s.apply(&route(
        "GRPCRoute",
        MESH,
        "mesh-grpc-split",
        "echo",
        "",
        "  - backendRefs: [{name: echo-v1, port: 9090, weight: 70}, {name: echo-v2, port: 9090, weight: 30}]\n",
    ));
    let r = s.grpc("mesh-client", &format!("{ECHO}:9090"), 100, &[]);
    assert_eq!(r["unary_ok"], 100, "{r}");
    let v1 = r["servers"]["echo-v1"].as_u64().unwrap_or(0);
    let v2 = r["servers"]["echo-v2"].as_u64().unwrap_or(0);
    // 70/30 of 100 calls: outside these bounds only with a broken split.
    assert_eq!(v1 + v2, 100, "{r}");
    assert!((50..=88).contains(&v1), "{r}");
}

fn grpc_route_request_header_modifier(s: &mut Suite) {
    s.apply(&route(
        "GRPCRoute",
        MESH,
        "grpc-header-modifier",
        "echo",
        "",
        "  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: X-Header-Set, value: set-overwrites-values}]\n        add: [{name: X-Header-Add, value: header-val-1}]\n        remove: [X-Header-Remove]\n    backendRefs: [{name: echo-v1, port: 9090}]\n",
    ));
    let headers = [
        "x-header-set:some-other-value",
        "x-header-remove:remove-val",
    ];
    let r = s.grpc("mesh-client", &format!("{ECHO}:9090"), 3, &headers);
    assert_eq!(r["servers"]["echo-v1"], 3, "{r}");
    assert_eq!(r["echoed"]["x-header-set"], "set-overwrites-values", "{r}");
    assert_eq!(r["echoed"]["x-header-add"], "header-val-1", "{r}");
    assert!(r["echoed"]["x-header-remove"].is_null(), "{r}");
}

fn matching_across_routes(s: &mut Suite) {
    let part1 = route(
        "HTTPRoute",
        MESH,
        "matching-part1",
        "echo",
        "  hostnames: [example.com, example.net]\n",
        "  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: echo-v1, port: 80}]\n",
    );
    let part2 = route(
        "HTTPRoute",
        MESH,
        "matching-part2",
        "echo",
        "  hostnames: [\"*.com\"]\n",
        "  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: echo-v2, port: 80}]\n",
    );
    s.apply(&format!("{part1}{part2}"));
    for (host, path, want) in [
        ("example.com", "/", "echo-v1"),
        ("example.net", "/example", "echo-v1"),
        ("example.com", "/v2", "echo-v2"),
        ("example.net", "/v2", "echo-v1"),
        ("example.com", "/v2/example", "echo-v2"),
    ] {
        let r = s.mesh("mesh-client", ECHO, &get(host, path));
        assert_eq!((r.code, r.backend()), (200, want), "{host}{path}: {r:?}");
    }
}

fn timeout_request(s: &mut Suite) {
    s.apply(&route(
        "HTTPRoute",
        MESH,
        "request-timeout",
        "echo",
        "",
        "  - matches: [{path: {type: PathPrefix, value: /delay}}]\n    timeouts: {request: 500ms}\n    backendRefs: [{name: echo-v1, port: 80}]\n  - timeouts: {request: 0s, backendRequest: 0s}\n    backendRefs: [{name: echo-v1, port: 80}]\n",
    ));
    assert_eq!(
        s.mesh("mesh-client", ECHO, &get("echo", "/delay/1500"))
            .code,
        504
    );
    let r = s.mesh("mesh-client", ECHO, &get("echo", "/other/1500"));
    assert_eq!((r.code, r.backend()), (200, "echo-v1"), "{r:?}");
}

fn invalid_cross_namespace_backend_ref(s: &mut Suite) {
    s.apply(&route(
        "HTTPRoute",
        MESH,
        "invalid-cross-namespace-backend-ref",
        "echo",
        "",
        "  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]\n",
    ));
    let resolved = s.condition(
        "HTTPRoute",
        MESH,
        "invalid-cross-namespace-backend-ref",
        "ResolvedRefs",
    );
    assert_eq!(resolved, (false, "RefNotPermitted".to_owned()));
    assert_eq!(s.mesh("mesh-client", ECHO, &get("echo", "/x")).code, 500);
}

fn header_modifier_backend_weights(s: &mut Suite) {
    let set = |b: &str| {
        format!("{{name: {b}, port: 80, weight: 10, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: {b}}}]}}}}]}}")
    };
    s.apply(&route(
        "HTTPRoute",
        MESH,
        "request-header-modifier-backend-weights",
        "echo",
        "",
        &format!(
            "  - backendRefs:\n    - {}\n    - {}\n",
            set("echo-v1"),
            set("echo-v2")
        ),
    ));
    for _ in 0..20 {
        let r = s.mesh("mesh-client", ECHO, &get("echo", "/"));
        let backend = r.seen_header("backend").unwrap_or("");
        assert!(!backend.is_empty() && r.backend() == backend, "{r:?}");
    }
}
