//! The Gateway HTTP profile: upstream's HTTPRoute tests at the Gateway
//! `gateway-conformance-infra/same-namespace`, requests from outside the mesh.
use crate::{get, Req, Suite, INFRA};

pub const TESTS: &[crate::Test] = &[
    ("HTTPRouteSimpleSameNamespace", simple_same_namespace),
    ("HTTPRouteMatchingAcrossRoutes", matching_across_routes),
    ("HTTPRouteTimeoutRequest", timeout_request),
    ("HTTPRouteTimeoutBackendRequest", timeout_backend_request),
    ("HTTPRouteBackendProtocolH2C", backend_protocol_h2c),
    ("HTTPRouteReferenceGrant", reference_grant),
    ("HTTPRouteInvalidReferenceGrant", invalid_reference_grant),
    (
        "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
        partially_invalid_via_reference_grant,
    ),
    (
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        invalid_cross_namespace_backend_ref,
    ),
    (
        "HTTPRouteInvalidBackendRefUnknownKind",
        invalid_backend_ref_unknown_kind,
    ),
    (
        "HTTPRouteInvalidNonExistentBackendRef",
        invalid_non_existent_backend_ref,
    ),
    (
        "HTTPRouteRequestHeaderModifierBackendWeights",
        header_modifier_backend_weights,
    ),
    (
        "HTTPRouteBackendRequestHeaderModifier",
        backend_request_header_modifier,
    ),
    ("HTTPRouteRequestPercentageMirror", percentage_mirror),
    ("HTTPRouteCORS", cors),
];

/// An HTTPRoute in the infra namespace on the Gateway, with these rules.
pub fn route(name: &str, extra_spec: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n{extra_spec}  rules:\n{rules}---\n"
    )
}

fn conditions(s: &Suite, name: &str) -> ((bool, String), (bool, String)) {
    (
        s.condition("HTTPRoute", INFRA, name, "Accepted"),
        s.condition("HTTPRoute", INFRA, name, "ResolvedRefs"),
    )
}

pub fn accepted_and_resolved(s: &Suite, name: &str) {
    let ok = (true, "Accepted".to_owned());
    assert_eq!(
        conditions(s, name),
        (ok, (true, "ResolvedRefs".to_owned())),
        "{name}"
    );
}

fn simple_same_namespace(s: &mut Suite) {
    s.apply(&route(
        "gateway-conformance-infra-test",
        "",
        "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    ));
    accepted_and_resolved(s, "gateway-conformance-infra-test");
    let r = s.gw(&get("", "/"));
    assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
}

fn matching_across_routes(s: &mut Suite) {
    let part1 = route(
        "matching-part1",
        "  hostnames: [example.com, example.net]\n",
        "  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let part2 = route(
        "matching-part2",
        "  hostnames: [\"*.com\"]\n",
        "  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    s.apply(&format!("{part1}{part2}"));
    accepted_and_resolved(s, "matching-part1");
    accepted_and_resolved(s, "matching-part2");
    let cases = [
        ("example.com", "/", None, "infra-backend-v1"),
        ("example.com", "/example", None, "infra-backend-v1"),
        ("example.net", "/example", None, "infra-backend-v1"),
        ("example.com", "/example", Some("one"), "infra-backend-v1"),
        ("example.com", "/v2", None, "infra-backend-v2"),
        // v2 matches are limited to example.com
        ("example.net", "/v2", None, "infra-backend-v1"),
        ("example.com", "/v2/example", None, "infra-backend-v2"),
        ("example.com", "/", Some("two"), "infra-backend-v2"),
    ];
    for (host, path, version, want) in cases {
        let mut req = get(host, path);
        if let Some(v) = version {
            req.headers.push(("version", v));
        }
        let r = s.gw(&req);
        assert_eq!(
            (r.code, r.backend()),
            (200, want),
            "{host}{path} {version:?}: {r:?}"
        );
    }
    // No route admits this host.
    assert_eq!(s.gw(&get("example.org", "/")).code, 404);
}

/// A rule with `timeouts`, and one where `0s` disables them (GEP-1742).
fn timeouts(s: &mut Suite, field: &str) {
    s.apply(&route(
        "request-timeout",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /delay}}}}]\n    timeouts: {{{field}: 500ms}}\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n  - matches: [{{path: {{type: PathPrefix, value: /disabled}}}}]\n    timeouts: {{{field}: 0s}}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /delay}}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
        ),
    ));
    accepted_and_resolved(s, "request-timeout");
    assert_eq!(s.gw(&get("", "/delay/0")).code, 200);
    let r = s.gw(&get("", "/delay/1500"));
    assert_eq!(r.code, 504, "{r:?}");
    let r = s.gw(&get("", "/disabled/1500"));
    assert_eq!(
        (r.code, r.backend()),
        (200, "infra-backend-v1"),
        "0s disables: {r:?}"
    );
}

fn timeout_request(s: &mut Suite) {
    timeouts(s, "request");
}

fn timeout_backend_request(s: &mut Suite) {
    timeouts(s, "backendRequest");
}

fn backend_protocol_h2c(s: &mut Suite) {
    s.apply(&route(
        "backend-protocol-h2c",
        "",
        "  - backendRefs: [{name: infra-backend-v1-h2c, port: 8080}]\n",
    ));
    accepted_and_resolved(s, "backend-protocol-h2c");
    let r = s.gw(&get("", "/"));
    assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
    assert_eq!(
        r.echo["version"], "HTTP/2.0",
        "prior knowledge h2c upstream: {r:?}"
    );
}

const APP_NS: &str = "gateway-conformance-app-backend";

fn grant(in_ns: &str, from_ns: &str, to_name: Option<&str>) -> String {
    let name = to_name.map_or(String::new(), |n| format!(", name: {n}"));
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: reference-grant, namespace: {in_ns}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {from_ns}}}]\n  to: [{{group: \"\", kind: Service{name}}}]\n---\n"
    )
}

fn to_app_backend(name: &str) -> String {
    route(
        name,
        "",
        &format!("  - backendRefs: [{{name: app-backend-v1, namespace: {APP_NS}, port: 8080}}]\n"),
    )
}

fn reference_grant(s: &mut Suite) {
    s.apply(&format!(
        "{}{}",
        to_app_backend("reference-grant"),
        grant(APP_NS, INFRA, Some("app-backend-v1"))
    ));
    accepted_and_resolved(s, "reference-grant");
    let r = s.gw(&get("", "/"));
    assert_eq!((r.code, r.backend()), (200, "app-backend-v1"), "{r:?}");
}

/// Refused with 500 and `RefNotPermitted`, never sent to the backend.
fn not_permitted(s: &Suite, name: &str, path: &str) {
    let ((accepted, _), resolved) = conditions(s, name);
    assert!(accepted, "{name} is Accepted");
    assert_eq!(resolved, (false, "RefNotPermitted".to_owned()), "{name}");
    let r = s.gw(&get("", path));
    assert_eq!(r.code, 500, "{r:?}");
}

fn invalid_reference_grant(s: &mut Suite) {
    // The grant is for another namespace's routes.
    s.apply(&format!(
        "{}{}",
        to_app_backend("invalid-reference-grant"),
        grant(APP_NS, "gateway-conformance-web-backend", None)
    ));
    not_permitted(s, "invalid-reference-grant", "/");
}

fn partially_invalid_via_reference_grant(s: &mut Suite) {
    let rules = format!(
        "  - backendRefs: [{{name: app-backend-v1, namespace: {APP_NS}, port: 8080}}]\n  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]\n    backendRefs: [{{name: app-backend-v2, namespace: {APP_NS}, port: 8080}}]\n"
    );
    s.apply(&format!(
        "{}{}",
        route("invalid-reference-grant", "", &rules),
        grant(APP_NS, INFRA, Some("app-backend-v1"))
    ));
    not_permitted(s, "invalid-reference-grant", "/v2");
    let r = s.gw(&get("", "/"));
    assert_eq!(
        (r.code, r.backend()),
        (200, "app-backend-v1"),
        "the valid sibling: {r:?}"
    );
}

fn invalid_cross_namespace_backend_ref(s: &mut Suite) {
    s.apply(&route(
        "invalid-cross-namespace-backend-ref",
        "",
        "  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]\n",
    ));
    not_permitted(s, "invalid-cross-namespace-backend-ref", "/");
    assert!(s.seen("web-backend")["/"].is_null(), "reached web-backend");
}

/// Accepted, `ResolvedRefs` False with `reason`, and answered 500.
fn unresolved(s: &mut Suite, name: &str, backend: &str, reason: &str) {
    s.apply(&route(name, "", &format!("  - backendRefs: [{backend}]\n")));
    let ((accepted, _), resolved) = conditions(s, name);
    assert!(accepted, "{name} is Accepted");
    assert_eq!(resolved, (false, reason.to_owned()), "{name}");
    assert_eq!(s.gw(&get("", "/")).code, 500);
}

fn invalid_backend_ref_unknown_kind(s: &mut Suite) {
    let backend =
        "{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}";
    unresolved(
        s,
        "invalid-backend-ref-unknown-kind",
        backend,
        "InvalidKind",
    );
}

fn invalid_non_existent_backend_ref(s: &mut Suite) {
    let backend = "{name: nonexistent, port: 8080}";
    unresolved(
        s,
        "invalid-non-existent-backend-ref",
        backend,
        "BackendNotFound",
    );
}

fn header_modifier_backend_weights(s: &mut Suite) {
    let set = |b: &str| {
        format!("{{name: {b}, port: 8080, weight: 10, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: {b}}}]}}}}]}}")
    };
    s.apply(&route(
        "request-header-modifier-backend-weights",
        "",
        &format!(
            "  - backendRefs:\n    - {}\n    - {}\n",
            set("infra-backend-v1"),
            set("infra-backend-v2")
        ),
    ));
    accepted_and_resolved(s, "request-header-modifier-backend-weights");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = s.gw(&get("", "/"));
        assert_eq!(r.code, 200, "{r:?}");
        let backend = r.seen_header("backend").unwrap_or("");
        assert!(
            !backend.is_empty() && r.backend().starts_with(backend),
            "the backendRef's filter ran for the backend it chose: {r:?}"
        );
        seen.insert(r.backend().to_owned());
    }
    assert_eq!(seen.len(), 2, "both backends served: {seen:?}");
}

fn backend_request_header_modifier(s: &mut Suite) {
    s.apply(&route(
        "backend-request-header-modifier",
        "",
        "  - matches: [{path: {type: PathPrefix, value: /set}}]\n    backendRefs:\n    - name: infra-backend-v1\n      port: 8080\n      filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier:\n          set: [{name: X-Header-Set, value: set-overwrites-values}]\n          add: [{name: X-Header-Add, value: add-appends-values}]\n          remove: [X-Header-Remove]\n  - matches: [{path: {type: PathPrefix, value: /both}}]\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: X-Header-Rule, value: rule}]}\n    backendRefs:\n    - name: infra-backend-v2\n      port: 8080\n      filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier: {set: [{name: X-Header-Rule, value: backend-after-rule}]}\n",
    ));
    accepted_and_resolved(s, "backend-request-header-modifier");
    let mut req = get("", "/set");
    req.headers = vec![
        ("X-Header-Set", "some-other-value"),
        ("X-Header-Add", "some-value"),
        ("X-Header-Remove", "val"),
    ];
    let r = s.gw(&req);
    assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
    assert_eq!(r.seen_header("x-header-set"), Some("set-overwrites-values"));
    let add = r.echo["headers"]["x-header-add"].as_str().unwrap_or("");
    assert!(
        add.contains("some-value") && add.contains("add-appends-values"),
        "{r:?}"
    );
    assert_eq!(r.seen_header("x-header-remove"), None, "{r:?}");
    let r = s.gw(&get("", "/both"));
    assert_eq!(
        r.seen_header("x-header-rule"),
        Some("backend-after-rule"),
        "{r:?}"
    );
}

fn percentage_mirror(s: &mut Suite) {
    let mirror = |fraction: &str| {
        format!("    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: infra-backend-v2, port: 8080}}{fraction}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n")
    };
    let rules = format!(
        "  - matches: [{{path: {{type: Exact, value: /percent-mirror}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /percent-mirror-fraction}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /mirror-all}}}}]\n{}",
        mirror(", percent: 20"),
        mirror(", fraction: {numerator: 1, denominator: 2}"),
        mirror(""),
    );
    s.apply(&route("request-percentage-mirror", "", &rules));
    accepted_and_resolved(s, "request-percentage-mirror");
    let before = s.seen("infra-backend-v2");
    let n = 100;
    for path in ["/percent-mirror", "/percent-mirror-fraction"] {
        for _ in 0..n {
            let r = s.gw(&get("", path));
            assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
        }
    }
    // Mirrors are fire and forget: the last one, always mirrored, marks the end.
    s.gw(&get("", "/mirror-all"));
    let count = |v: &serde_json::Value, p: &str| v[p].as_u64().unwrap_or(0);
    let seen = ferrymesh_tests::eventually(
        std::time::Duration::from_secs(20),
        "the always-mirrored request at the mirror",
        || {
            let v = s.seen("infra-backend-v2");
            if count(&v, "/mirror-all") > count(&before, "/mirror-all") {
                Ok(v)
            } else {
                Err(v)
            }
        },
    )
    .expect("mirrored");
    let got = |p| count(&seen, p) - count(&before, p);
    // 20 % and 1/2 of 100 requests: far outside these bounds only by a broken sampler.
    assert!((3..=45).contains(&got("/percent-mirror")), "{seen}");
    assert!(
        (25..=75).contains(&got("/percent-mirror-fraction")),
        "{seen}"
    );
}

fn preflight<'a>(path: &'a str, origin: &'a str, method: &'a str) -> Req<'a> {
    Req {
        host: "",
        method: "OPTIONS",
        path,
        headers: vec![
            ("Origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ],
    }
}

fn cors(s: &mut Suite) {
    let one = "  - matches: [{path: {type: PathPrefix, value: /cors-1}}]\n    filters:\n    - type: CORS\n      cors:\n        allowOrigins: [\"https://www.foo.com\", \"https://*.bar.com\"]\n        allowMethods: [GET, OPTIONS]\n        allowHeaders: [x-header-1, x-header-2]\n        exposeHeaders: [x-header-3, x-header-4]\n        allowCredentials: true\n        maxAge: 3600\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n";
    let two = "  - matches: [{path: {type: PathPrefix, value: /cors-2}}]\n    filters: [{type: CORS, cors: {allowOrigins: [\"https://www.foo.com\"], allowMethods: [\"*\"]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n";
    let any = "  - matches: [{path: {type: PathPrefix, value: /cors-wildcard-origin}}]\n    filters: [{type: CORS, cors: {allowOrigins: [\"*\"], allowMethods: [\"*\"]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n";
    s.apply(&format!(
        "{}{}{}",
        route("cors-multiple-origins-methods-headers", "", one),
        route("cors-wildcard-methods", "", two),
        route("cors-wildcard-origin", "", any)
    ));
    accepted_and_resolved(s, "cors-multiple-origins-methods-headers");
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let r = s.gw(&preflight("/cors-1", origin, "GET"));
        assert!(matches!(r.code, 200 | 204), "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, OPTIONS")
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    }
    let r = s.gw(&preflight("/cors-1", "https://foobar.com", "GET"));
    assert!(matches!(r.code, 200 | 204 | 403), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    for (origin, allowed) in [
        ("https://www.foo.com", true),
        ("https://www.bar.com", true),
        ("https://foobar.com", false),
    ] {
        let mut req = get("", "/cors-1");
        req.headers = vec![("Origin", origin), ("access-control-request-method", "GET")];
        let r = s.gw(&req);
        assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            allowed.then_some(origin),
            "{r:?}"
        );
    }
    cors_wildcards(s);
}

/// `allowMethods: ["*"]` without credentials, and `allowOrigins: ["*"]`.
fn cors_wildcards(s: &Suite) {
    let r = s.gw(&preflight("/cors-2", "https://www.foo.com", "POST"));
    assert!(
        matches!(r.header("access-control-allow-methods"), Some("POST" | "*")),
        "{r:?}"
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None, "{r:?}");
    for origin in ["https://foobar.com", "https://foobar.com:12345"] {
        let r = s.gw(&preflight("/cors-wildcard-origin", origin, "PUT"));
        assert!(
            matches!(r.header("access-control-allow-origin"), Some(o) if o == origin || o == "*"),
            "{r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("PUT"),
            "{r:?}"
        );
        assert_eq!(r.header("access-control-allow-credentials"), None, "{r:?}");
        let mut req = get("", "/cors-wildcard-origin");
        req.method = "PUT";
        req.headers = vec![("Origin", origin)];
        let r = s.gw(&req);
        assert_eq!(r.code, 200, "{r:?}");
        assert!(
            matches!(r.header("access-control-allow-origin"), Some(o) if o == origin || o == "*"),
            "{r:?}"
        );
    }
}
