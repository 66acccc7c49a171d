use http::HeaderMap;

use super::*;
use mesh_model::{
    config,
    l7::table::{ParentKey, Table, Unresolved},
};

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - name: prefix-api
    matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
  - name: prefix-api-v2
    matches: [{path: {type: PathPrefix, value: /api/v2/}}]
    backendRefs: [{name: api-v2, port: 80}]
  - name: exact-api
    matches: [{path: {type: Exact, value: /api}}]
    backendRefs: [{name: exact, port: 80}]
  - name: regex
    matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: items, port: 80}]
  - name: method
    matches: [{path: {type: PathPrefix, value: /api}, method: DELETE}]
    backendRefs: [{name: deleter, port: 80}]
  - name: header
    matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: X-Canary, value: "yes"}]}]
    backendRefs: [{name: canary, port: 80}]
  - name: header-regex
    matches: [{headers: [{type: RegularExpression, name: user-agent, value: "curl/.*"}]}]
    backendRefs: [{name: curl, port: 80}]
  - name: query
    matches: [{path: {type: PathPrefix, value: /search}, queryParams: [{name: lang, value: fr}]}]
    backendRefs: [{name: french, port: 80}]
  - name: catch-all
    backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - name: tie-older-name-wins
    matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: tie, port: 80}]
  - name: other-port-only
    matches: [{path: {type: Exact, value: /port}}]
    backendRefs: [{name: any-port, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}}]
    backendRefs: [{name: grpc-unary, port: 80}]
  - matches: [{method: {type: RegularExpression, service: "echo\\..*"}}]
    backendRefs: [{name: grpc-any, port: 80}]
"#;

fn table() -> Table {
    let o = config::parse("routes.yaml", ROUTES).expect("routes parse");
    Table::build(&o).expect("table")
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    grpc: bool,
    port: u16,
    want: Option<&'static str>,
}

const fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    want: Option<&'static str>,
) -> Case {
    Case {
        name,
        method,
        path,
        query: None,
        headers: &[],
        grpc: false,
        port: 80,
        want,
    }
}

#[test]
fn selection_follows_gateway_api_precedence() {
    let t = table();
    let entries = &t.parents[&ParentKey::Service("shop/web".into())].entries;
    let cases = [
        case("exact beats prefix", "GET", "/api", Some("shop/exact")),
        case(
            "longest prefix wins",
            "GET",
            "/api/v2/users",
            Some("shop/api-v2"),
        ),
        case(
            "prefix matches whole segments",
            "GET",
            "/apix",
            Some("shop/web"),
        ),
        case(
            "a trailing slash in the rule is ignored",
            "GET",
            "/api/v2",
            Some("shop/api-v2"),
        ),
        case(
            "same prefix: route name order (a-web before b-web)",
            "GET",
            "/api/users",
            Some("shop/tie"),
        ),
        case(
            "method adds precedence",
            "DELETE",
            "/api/users",
            Some("shop/deleter"),
        ),
        Case {
            headers: &[("x-canary", "yes")],
            ..case(
                "header adds precedence",
                "GET",
                "/api/users",
                Some("shop/canary"),
            )
        },
        Case {
            headers: &[("x-canary", "no")],
            ..case(
                "header value must match",
                "GET",
                "/api/users",
                Some("shop/tie"),
            )
        },
        case("regex path", "GET", "/items/42", Some("shop/items")),
        case("regex is anchored", "GET", "/items/42/x", Some("shop/web")),
        Case {
            headers: &[("user-agent", "curl/8.0")],
            ..case("header regex", "GET", "/other", Some("shop/curl"))
        },
        Case {
            query: Some("q=x&lang=fr"),
            ..case("query param", "GET", "/search", Some("shop/french"))
        },
        Case {
            query: Some("lang=de"),
            ..case("query value must match", "GET", "/search", Some("shop/web"))
        },
        Case {
            port: 8080,
            ..case(
                "route bound to another port does not apply",
                "GET",
                "/api",
                Some("shop/tie"),
            )
        },
        Case {
            port: 8080,
            ..case(
                "route for all ports applies",
                "GET",
                "/port",
                Some("shop/any-port"),
            )
        },
        Case {
            grpc: true,
            ..case(
                "gRPC exact method",
                "POST",
                "/echo.Echo/Unary",
                Some("shop/grpc-unary"),
            )
        },
        Case {
            grpc: true,
            ..case(
                "gRPC service regex",
                "POST",
                "/echo.Echo/Stream",
                Some("shop/grpc-any"),
            )
        },
        Case {
            grpc: true,
            ..case(
                "gRPC falls back to HTTPRoutes",
                "POST",
                "/other.Svc/M",
                Some("shop/web"),
            )
        },
        case(
            "not gRPC: GRPCRoutes ignored",
            "POST",
            "/echo.Echo/Unary",
            Some("shop/web"),
        ),
    ];
    for c in cases {
        let mut headers = HeaderMap::new();
        for (k, v) in c.headers {
            headers.insert(*k, v.parse().expect("header"));
        }
        let view = RequestView {
            method: c.method,
            path: c.path,
            query: c.query,
            headers: &headers,
            grpc: c.grpc,
            port: c.port,
            namespace: Some("shop"),
            host: "web.shop",
        };
        let got = select(entries, &view).map(|e| e.rule.backends[0].backend.service.clone());
        assert_eq!(got.as_deref(), c.want, "{}", c.name);
    }
}

#[test]
fn bad_objects_are_refused_with_the_field() {
    // Not YAML the model reads: the whole file is refused, with its place.
    let err = config::check(
        "bad.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, name: web}]\n  rules: [{matchez: []}]\n",
    )
    .expect_err("unknown field")
    .to_string();
    assert!(
        err.starts_with("bad.yaml") && err.contains("unknown field `matchez`"),
        "{err}"
    );
    // Objects that read but do not build are refused alone, with their field; the
    // rest of the config applies.
    let route = |rules: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, name: web, port: 80}}]\n  rules: [{rules}]\n")
    };
    let policy = |spec: &str| {
        format!("apiVersion: ferrymesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}")
    };
    let cases = [
        ("bad regex", route("{matches: [{path: {type: RegularExpression, value: \"(\"}}]}"), "HTTPRoute shop/r", "spec.rules[0].matches[0].path.value"),
        ("relative path", route("{matches: [{path: {type: Exact, value: api}}]}"), "HTTPRoute shop/r", "must start with /"),
        ("bad redirect code", route("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]}"), "HTTPRoute shop/r", "statusCode: 200"),
        ("bad duration", route("{timeouts: {request: 10}, backendRefs: [{name: web}]}"), "HTTPRoute shop/r", "timeouts.request"),
        ("policy with a bad target kind", policy("  targetRefs: [{kind: Pod, name: x}]\n"), "TrafficPolicy shop/p", "kind \"Pod\""),
        ("rate limit of zero", policy("  targetRefs: [{kind: Service, name: web}]\n  rateLimit: {requests: 0}\n"), "TrafficPolicy shop/p", "rateLimit.requests"),
        ("bad JWKS", "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j, namespace: shop}\nspec:\n  jwtRules: [{issuer: x, jwks: \"not json\"}]\n".to_owned(), "RequestAuthentication shop/j", "JWKS is not valid"),
    ];
    for (name, yaml, object, want) in cases {
        let state = config::check("ok.yaml", &yaml).expect(name);
        let notes: Vec<_> = state.fail_closed().collect();
        assert!(
            notes
                .iter()
                .any(|(o, what)| o == object && what.contains(want)),
            "{name}: {notes:?}"
        );
        assert!(
            state.l7.parents.is_empty(),
            "{name}: nothing of it attached"
        );
        assert!(
            state.l7.service_policies_is_empty(),
            "{name}: nothing of it merged"
        );
    }
}

const TENANTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: payments-v1, namespace: prod}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: shared, namespace: prod}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: sink, namespace: evil}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: own, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: payments, port: 80}]
  rules: [{backendRefs: [{name: payments-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: takeover, namespace: evil}
spec:
  parentRefs: [{group: "", kind: Service, name: payments, namespace: prod, port: 80}]
  rules:
  - backendRefs: [{name: payments-v1, namespace: prod, port: 80}, {name: sink, port: 80}, {name: shared, namespace: prod, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: evil-may-use-shared, namespace: prod}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: evil}]
  to: [{group: "", kind: Service, name: shared}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-their-gateway, namespace: evil}
spec:
  parentRefs: [{name: edge, namespace: prod}]
  rules: [{backendRefs: [{name: sink, port: 80}]}]
"#;

#[test]
fn routes_from_other_namespaces_affect_only_their_own_clients() {
    let objects = config::parse("t", TENANTS).expect("config");
    let table = Table::build(&objects).expect("table");
    let entries = &table.parents[&ParentKey::Service("prod/payments".into())].entries;
    let headers = HeaderMap::new();
    let route_for = |ns: Option<&str>| {
        let view = RequestView {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            grpc: false,
            port: 80,
            namespace: ns,
            host: "payments.prod",
        };
        select(entries, &view).map(|e| e.rule.route.clone())
    };
    // The producer's route serves every other namespace, and unknown callers.
    for ns in [Some("prod"), Some("shop"), None] {
        assert_eq!(
            route_for(ns).as_deref(),
            Some("HTTPRoute prod/own"),
            "{ns:?}"
        );
    }
    // evil's consumer route applies to evil's own clients only...
    assert_eq!(
        route_for(Some("evil")).as_deref(),
        Some("HTTPRoute evil/takeover")
    );
    // ...its backendRef into prod is not permitted without a ReferenceGrant, and
    // permitted with prod's grant for exactly that Service.
    let takeover = entries
        .iter()
        .find(|e| e.rule.route == "HTTPRoute evil/takeover")
        .expect("consumer entry");
    let unresolved: Vec<_> = takeover
        .rule
        .backends
        .iter()
        .map(|b| b.unresolved)
        .collect();
    assert_eq!(unresolved, [Some(Unresolved::RefNotPermitted), None, None]);
    // A route cannot attach to another namespace's Gateway.
    assert!(!table
        .parents
        .contains_key(&ParentKey::Gateway("prod/edge".into())));
    assert_eq!(table.rejected.len(), 1, "{:?}", table.rejected);
    assert!(table.rejected[0]
        .reason
        .starts_with("NotAllowedByListeners"));
}

#[test]
fn hostnames_admit_exact_and_wildcard_hosts() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: &[(&[&str], &str, bool)] = &[
        (&[], "anything", true),
        (&["example.com"], "example.com", true),
        (&["example.com"], "example.com:8080", true),
        (&["example.com"], "example.com.", true),
        (&["example.com"], "www.example.com", false),
        (&["*.example.com"], "www.example.com", true),
        (&["*.example.com"], "a.b.example.com", true),
        (&["*.example.com"], "example.com", false),
        (&["*.example.com"], "badexample.com", false),
        (&["*.com"], "example.com", true),
        (&["example.com"], "[::1]:80", false),
    ];
    for (hostnames, host, want) in cases {
        assert_eq!(
            host_matches(&names(hostnames), host),
            *want,
            "{hostnames:?} {host}"
        );
    }
}

/// Upstream's HTTPRouteMatchingAcrossRoutes: hostnames filter, path precedence
/// decides across the routes that admit the host.
#[test]
fn hostnames_select_across_routes() {
    let objects = config::parse(
        "t",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part1, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part2, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: ["*.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: v2, port: 8080}]
"#,
    )
    .expect("config");
    let table = Table::build(&objects).expect("table");
    let entries = &table.parents[&ParentKey::Gateway("infra/same-namespace".into())].entries;
    let cases = [
        ("example.com", "/", None, Some("infra/v1")),
        ("example.com", "/example", None, Some("infra/v1")),
        ("example.net", "/example", None, Some("infra/v1")),
        ("example.com", "/example", Some("one"), Some("infra/v1")),
        ("example.com", "/v2", None, Some("infra/v2")),
        ("example.net", "/v2", None, Some("infra/v1")),
        ("example.com", "/v2/example", None, Some("infra/v2")),
        ("example.com", "/", Some("two"), Some("infra/v2")),
        ("example.org", "/", None, None),
    ];
    for (host, path, version, want) in cases {
        let mut headers = HeaderMap::new();
        if let Some(v) = version {
            headers.insert("version", v.parse().expect("header"));
        }
        let view = RequestView {
            method: "GET",
            path,
            query: None,
            headers: &headers,
            grpc: false,
            port: 80,
            namespace: None,
            host,
        };
        let got = select(entries, &view).map(|e| e.rule.backends[0].backend.service.clone());
        assert_eq!(got.as_deref(), want, "{host}{path} {version:?}");
    }
}
