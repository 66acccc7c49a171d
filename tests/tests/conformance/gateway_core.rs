//! The Gateway HTTP profile's core matching and filter tests, as tables of
//! upstream's requests and expected backends or statuses.
use super::gateway::{accepted_and_resolved, route};
use crate::{Req, Suite};

pub const TESTS: &[crate::Test] = &[
    ("HTTPRouteExactPathMatching", exact_path_matching),
    ("HTTPRouteHeaderMatching", header_matching),
    ("HTTPRouteMethodMatching", method_matching),
    ("HTTPRouteQueryParamMatching", query_param_matching),
    ("HTTPRouteRequestHeaderModifier", request_header_modifier),
    ("HTTPRouteResponseHeaderModifier", response_header_modifier),
    ("HTTPRouteRedirectHostAndStatus", redirect_host_and_status),
    ("HTTPRouteRewritePath", rewrite_path),
    ("HTTPRouteWeight", weight),
    ("HTTPRoutePathMatchOrder", path_match_order),
    ("HTTPRouteRedirectPath", redirect_path),
    ("HTTPRouteRedirectPort", redirect_port),
    ("HTTPRouteRedirectScheme", redirect_scheme),
    ("HTTPRouteRedirectPortAndScheme", redirect_port_and_scheme),
    ("HTTPRoute303Redirect", redirect_303),
    ("HTTPRoute307Redirect", redirect_307),
    ("HTTPRoute308Redirect", redirect_308),
    ("HTTPRouteRewriteHost", rewrite_host),
    ("HTTPRouteRequestMirror", request_mirror),
    ("HTTPRouteRequestMultipleMirrors", request_multiple_mirrors),
    ("GRPCExactMethodMatching", grpc_exact_method_matching),
    ("GRPCRouteHeaderMatching", grpc_route_header_matching),
];

/// What a request must get: a backend's answer, or a status.
#[derive(Debug, Clone, Copy)]
enum Want {
    Backend(&'static str),
    Status(u16),
}
use Want::{Backend, Status};

const V1: Want = Backend("infra-backend-v1");
const V2: Want = Backend("infra-backend-v2");

/// (method, path, request headers, expectation).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Want,
);

fn check(s: &mut Suite, name: &str, rules: &str, cases: &[Case]) {
    s.apply(&route(name, "", rules));
    accepted_and_resolved(s, name);
    for (method, path, headers, want) in cases {
        let r = s.gw(&Req {
            host: "",
            method,
            path,
            headers: headers.to_vec(),
        });
        let ok = match want {
            Backend(b) => r.code == 200 && r.backend() == *b,
            Status(c) => r.code == *c,
        };
        assert!(ok, "{method} {path} {headers:?}: want {want:?}, got {r:?}");
    }
}

fn exact_path_matching(s: &mut Suite) {
    let rules = "  - matches: [{path: {type: Exact, value: /one}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: Exact, value: /two}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n";
    check(
        s,
        "exact-matching",
        rules,
        &[
            ("GET", "/one", &[], V1),
            ("GET", "/two", &[], V2),
            ("GET", "/", &[], Status(404)),
            ("GET", "/one/example", &[], Status(404)),
            ("GET", "/two/", &[], Status(404)),
        ],
    );
}

fn header_matching(s: &mut Suite) {
    let rule = |m: &str, b: &str| {
        format!("  - matches: [{m}]\n    backendRefs: [{{name: {b}, port: 8080}}]\n")
    };
    let rules = [
        rule(
            "{headers: [{name: version, value: one}]}",
            "infra-backend-v1",
        ),
        rule(
            "{headers: [{name: version, value: two}]}",
            "infra-backend-v2",
        ),
        rule(
            "{headers: [{name: version, value: two}, {name: color, value: orange}]}",
            "infra-backend-v1",
        ),
        rule(
            "{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}",
            "infra-backend-v1",
        ),
        rule(
            "{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}",
            "infra-backend-v2",
        ),
    ]
    .concat();
    check(
        s,
        "header-matching",
        &rules,
        &[
            ("GET", "/", &[("Version", "one")], V1),
            ("GET", "/", &[("Version", "two")], V2),
            ("GET", "/", &[("Version", "two"), ("Color", "orange")], V1),
            ("GET", "/", &[("Version", "two"), ("Color", "blue")], V2),
            ("GET", "/", &[("Color", "orange")], Status(404)),
            ("GET", "/", &[("Some-Other-Header", "one")], Status(404)),
            ("GET", "/", &[("Color", "blue")], V1),
            ("GET", "/", &[("Color", "green")], V1),
            ("GET", "/", &[("Color", "red")], V2),
            ("GET", "/", &[("Color", "yellow")], V2),
            ("GET", "/", &[("Color", "purple")], Status(404)),
        ],
    );
}

fn method_matching(s: &mut Suite) {
    let rules = "  - matches: [{method: POST}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{method: GET}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /path1}, method: GET}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{headers: [{name: version, value: one}], method: PUT}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n";
    check(
        s,
        "method-matching",
        rules,
        &[
            ("POST", "/", &[], V1),
            ("GET", "/", &[], V2),
            ("HEAD", "/", &[], Status(404)),
            ("GET", "/path1", &[], V1),
            ("PUT", "/", &[("version", "one")], V2),
            ("PUT", "/", &[], Status(404)),
        ],
    );
}

fn query_param_matching(s: &mut Suite) {
    let rules = "  - matches: [{queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{queryParams: [{name: animal, value: dolphin}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}, {queryParams: [{name: ANIMAL, value: Whale}]}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n";
    check(
        s,
        "query-param-matching",
        rules,
        &[
            ("GET", "/?animal=whale", &[], V1),
            ("GET", "/?animal=dolphin", &[], V2),
            (
                "GET",
                "/?animal=dolphin&color=blue",
                &[],
                Backend("infra-backend-v3"),
            ),
            ("GET", "/?ANIMAL=Whale", &[], Backend("infra-backend-v3")),
            ("GET", "/?animal=whale&otherparam=irrelevant", &[], V1),
            ("GET", "/?animal=dolphin&color=yellow", &[], V2),
            ("GET", "/?color=blue", &[], Status(404)),
            ("GET", "/?animal=dog", &[], Status(404)),
            ("GET", "/?animal=whalesay", &[], Status(404)),
        ],
    );
}

fn request_header_modifier(s: &mut Suite) {
    let name = "request-header-modifier";
    s.apply(&route(name, "", "  - matches: [{path: {type: PathPrefix, value: /set}}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /add}}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-Header-Add, value: add-appends-values}]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /remove}}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [X-Header-Remove]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n"));
    accepted_and_resolved(s, name);
    let req = |path, headers: Vec<(&'static str, &'static str)>| Req {
        host: "",
        method: "GET",
        path,
        headers,
    };
    let r = s.gw(&req(
        "/set",
        vec![
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
    ));
    assert_eq!(
        r.seen_header("x-header-set"),
        Some("set-overwrites-values"),
        "{r:?}"
    );
    assert_eq!(r.seen_header("some-other-header"), Some("val"), "{r:?}");
    let r = s.gw(&req("/add", vec![("X-Header-Add", "some-other-value")]));
    assert_eq!(
        r.seen_header("x-header-add"),
        Some("some-other-value, add-appends-values"),
        "{r:?}"
    );
    let r = s.gw(&req(
        "/remove",
        vec![("X-Header-Remove", "val"), ("X-Other", "kept")],
    ));
    assert_eq!(
        (r.seen_header("x-header-remove"), r.seen_header("x-other")),
        (None, Some("kept")),
        "{r:?}"
    );
}

fn response_header_modifier(s: &mut Suite) {
    let name = "response-header-modifier";
    s.apply(&route(name, "", "  - matches: [{path: {type: PathPrefix, value: /set}}]\n    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /add}}]\n    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-Header-Add, value: add-appends-values}]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /remove}}]\n    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [X-Served-By]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n"));
    accepted_and_resolved(s, name);
    let r = s.gw(&crate::get("", "/set"));
    assert_eq!(
        r.header("x-header-set"),
        Some("set-overwrites-values"),
        "{r:?}"
    );
    let r = s.gw(&crate::get("", "/add"));
    assert_eq!(
        r.header("x-header-add"),
        Some("add-appends-values"),
        "{r:?}"
    );
    let r = s.gw(&crate::get("", "/remove"));
    assert_eq!((r.code, r.header("x-served-by")), (200, None), "{r:?}");
}

fn redirect_host_and_status(s: &mut Suite) {
    let name = "redirect-host-and-status";
    s.apply(&route(name, "", "  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]\n  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]\n"));
    // Upstream's listener is on 80; without a port or scheme in the filter the
    // listener's port stays (the spec's rule), here the gateway's 8000.
    let r = s.gw(&crate::get("", "/hostname-redirect"));
    assert_eq!(r.code, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://example.org:8000/hostname-redirect"),
        "{r:?}"
    );
    let r = s.gw(&crate::get("", "/host-and-status"));
    assert_eq!(r.code, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://example.org:8000/host-and-status"),
        "{r:?}"
    );
}

fn rewrite_path(s: &mut Suite) {
    let name = "rewrite-path";
    s.apply(&route(name, "", "  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /full/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n"));
    accepted_and_resolved(s, name);
    for (path, seen) in [
        ("/prefix/one/two", "/one/two"),
        ("/full/one/two", "/one"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
    ] {
        let r = s.gw(&crate::get("", path));
        assert_eq!(
            (r.code, r.echo["path"].as_str()),
            (200, Some(seen)),
            "{path}: {r:?}"
        );
    }
}

fn weight(s: &mut Suite) {
    let name = "weighted-backends";
    s.apply(&route(name, "", "  - backendRefs:\n    - {name: infra-backend-v1, port: 8080, weight: 70}\n    - {name: infra-backend-v2, port: 8080, weight: 30}\n    - {name: infra-backend-v3, port: 8080, weight: 0}\n"));
    accepted_and_resolved(s, name);
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        let r = s.gw(&crate::get("", "/"));
        assert_eq!(r.code, 200, "{r:?}");
        *counts.entry(r.backend().to_owned()).or_default() += 1;
    }
    // 70/30/0 of 100: outside these bounds only with a broken split.
    let v1 = counts.get("infra-backend-v1").copied().unwrap_or(0);
    assert!((50..=88).contains(&v1), "{counts:?}");
    assert_eq!(
        counts.get("infra-backend-v3"),
        None,
        "weight 0 gets nothing: {counts:?}"
    );
}

fn path_match_order(s: &mut Suite) {
    let rule = |kind: &str, path: &str, b: &str| {
        format!("  - matches: [{{path: {{type: {kind}, value: {path}}}}}]\n    backendRefs: [{{name: {b}, port: 8080}}]\n")
    };
    let rules = [
        rule("PathPrefix", "/match", "infra-backend-v1"),
        rule("PathPrefix", "/match/exact", "infra-backend-v2"),
        rule("Exact", "/match/exact", "infra-backend-v3"),
        rule("PathPrefix", "/match/exact/one", "infra-backend-v1"),
        rule("Exact", "/match/exact/one", "infra-backend-v2"),
        rule("PathPrefix", "/match/prefix/one", "infra-backend-v3"),
    ]
    .concat();
    check(
        s,
        "path-match-order",
        &rules,
        &[
            ("GET", "/match/exact/one", &[], V2),
            ("GET", "/match/exact", &[], Backend("infra-backend-v3")),
            ("GET", "/match/exact/two", &[], V2),
            ("GET", "/match/exact/one/more", &[], V1),
            (
                "GET",
                "/match/prefix/one/any",
                &[],
                Backend("infra-backend-v3"),
            ),
            ("GET", "/match/any", &[], V1),
            ("GET", "/matcher", &[], Status(404)),
        ],
    );
}

/// A route of redirect rules, then (path, status, Location) with Host example.com.
fn redirects(s: &mut Suite, name: &str, rules: &str, cases: &[(&str, u16, &str)]) {
    s.apply(&route(name, "", rules));
    accepted_and_resolved(s, name);
    for (path, code, location) in cases {
        let r = s.gw(&crate::get("example.com", path));
        assert_eq!(
            (r.code, r.header("location")),
            (*code, Some(*location)),
            "{path}: {r:?}"
        );
    }
}

fn redirect_rule(prefix: &str, redirect: &str) -> String {
    format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]\n")
}

fn redirect_path(s: &mut Suite) {
    let rules = [
        redirect_rule("/original-prefix", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}"),
        redirect_rule("/full", "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}"),
        redirect_rule("/path-and-host", "{hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}"),
        redirect_rule("/path-and-status", "{path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}, statusCode: 301}"),
    ]
    .concat();
    redirects(
        s,
        "redirect-path",
        &rules,
        &[
            (
                "/original-prefix/lemon",
                302,
                "http://example.com/replacement-prefix/lemon",
            ),
            (
                "/full/path/original",
                302,
                "http://example.com/full-path-replacement",
            ),
            (
                "/path-and-host",
                302,
                "http://example.org/replacement-prefix",
            ),
            (
                "/path-and-status",
                301,
                "http://example.com/replacement-full",
            ),
        ],
    );
}

fn redirect_port(s: &mut Suite) {
    let rules = [
        redirect_rule("/port", "{port: 8083}"),
        redirect_rule("/port-and-host", "{hostname: example.org, port: 8083}"),
        redirect_rule("/port-and-status", "{port: 8083, statusCode: 301}"),
    ]
    .concat();
    redirects(
        s,
        "redirect-port",
        &rules,
        &[
            ("/port", 302, "http://example.com:8083/port"),
            (
                "/port-and-host",
                302,
                "http://example.org:8083/port-and-host",
            ),
            (
                "/port-and-status",
                301,
                "http://example.com:8083/port-and-status",
            ),
        ],
    );
}

fn redirect_scheme(s: &mut Suite) {
    let rules = [
        redirect_rule("/scheme", "{scheme: https}"),
        redirect_rule("/scheme-and-host", "{scheme: https, hostname: example.org}"),
        redirect_rule("/scheme-and-status", "{scheme: https, statusCode: 301}"),
    ]
    .concat();
    redirects(
        s,
        "redirect-scheme",
        &rules,
        &[
            ("/scheme", 302, "https://example.com/scheme"),
            (
                "/scheme-and-host",
                302,
                "https://example.org/scheme-and-host",
            ),
            (
                "/scheme-and-status",
                301,
                "https://example.com/scheme-and-status",
            ),
        ],
    );
}

fn redirect_port_and_scheme(s: &mut Suite) {
    let rules = [
        redirect_rule("/scheme-nil-and-port-nil", "{statusCode: 302}"),
        redirect_rule("/scheme-nil-and-port-80", "{port: 80}"),
        redirect_rule("/scheme-nil-and-port-8080", "{port: 8080}"),
        redirect_rule("/scheme-https-and-port-nil", "{scheme: https}"),
        redirect_rule("/scheme-https-and-port-443", "{scheme: https, port: 443}"),
        redirect_rule("/scheme-https-and-port-8443", "{scheme: https, port: 8443}"),
    ]
    .concat();
    redirects(
        s,
        "redirect-port-and-scheme",
        &rules,
        &[
            (
                "/scheme-nil-and-port-nil",
                302,
                "http://example.com/scheme-nil-and-port-nil",
            ),
            (
                "/scheme-nil-and-port-80",
                302,
                "http://example.com/scheme-nil-and-port-80",
            ),
            (
                "/scheme-nil-and-port-8080",
                302,
                "http://example.com:8080/scheme-nil-and-port-8080",
            ),
            (
                "/scheme-https-and-port-nil",
                302,
                "https://example.com/scheme-https-and-port-nil",
            ),
            (
                "/scheme-https-and-port-443",
                302,
                "https://example.com/scheme-https-and-port-443",
            ),
            (
                "/scheme-https-and-port-8443",
                302,
                "https://example.com:8443/scheme-https-and-port-8443",
            ),
        ],
    );
}

/// A POST to the redirect answers `code`, Location keeping the path.
fn redirect_status(s: &mut Suite, code: u16, path: &str) {
    let name = format!("{code}-redirect");
    s.apply(&route(
        &name,
        "",
        &redirect_rule(path, &format!("{{statusCode: {code}}}")),
    ));
    accepted_and_resolved(s, &name);
    let r = s.gw(&Req {
        method: "POST",
        ..crate::get("example.com", path)
    });
    let location = format!("http://example.com{path}");
    assert_eq!(
        (r.code, r.header("location")),
        (code, Some(location.as_str())),
        "{r:?}"
    );
}

fn redirect_303(s: &mut Suite) {
    redirect_status(s, 303, "/see-other");
}

fn redirect_307(s: &mut Suite) {
    redirect_status(s, 307, "/temporary-redirect");
}

fn redirect_308(s: &mut Suite) {
    redirect_status(s, 308, "/permanent-redirect");
}

fn rewrite_host(s: &mut Suite) {
    let name = "rewrite-host";
    s.apply(&route(name, "", "  - matches: [{path: {type: PathPrefix, value: /one}}]\n    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - filters: [{type: URLRewrite, urlRewrite: {hostname: example.org}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n"));
    accepted_and_resolved(s, name);
    for (path, backend, host) in [
        ("/one", "infra-backend-v1", "one.example.org"),
        ("/", "infra-backend-v2", "example.org"),
    ] {
        let r = s.gw(&crate::get("rewrite.example", path));
        assert_eq!(
            (r.code, r.backend(), r.seen_header("host")),
            (200, backend, Some(host)),
            "{r:?}"
        );
    }
}

/// Requests to `path`: answered by infra-backend-v1, copies seen by each mirror.
fn mirrored(s: &mut Suite, name: &str, mirrors: &[&str]) {
    let filters: String = mirrors
        .iter()
        .map(|m| format!("    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: {m}, port: 8080}}}}}}\n"))
        .collect();
    s.apply(&route(name, "", &format!("  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n    filters:\n{filters}    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n")));
    accepted_and_resolved(s, name);
    let path = format!("/{name}/once");
    let r = s.gw(&crate::get("", &path));
    assert_eq!((r.code, r.backend()), (200, "infra-backend-v1"), "{r:?}");
    for m in mirrors {
        ferrymesh_tests::eventually(
            std::time::Duration::from_secs(20),
            &format!("the copy at {m}"),
            || {
                let seen = s.seen(m);
                if seen[path.as_str()].as_u64() == Some(1) {
                    Ok(())
                } else {
                    Err(seen)
                }
            },
        )
        .expect("mirrored");
    }
}

fn request_mirror(s: &mut Suite) {
    mirrored(s, "request-mirror", &["infra-backend-v2"]);
}

fn request_multiple_mirrors(s: &mut Suite) {
    mirrored(
        s,
        "request-multiple-mirrors",
        &["infra-backend-v2", "infra-backend-v3"],
    );
}

/// A GRPCRoute on the Gateway; lab-http's client calls `echo.Echo/Unary`.
fn grpc_route(name: &str, rules: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules:\n{rules}---\n", crate::INFRA)
}

fn grpc_servers(s: &Suite, headers: &[&str]) -> serde_json::Value {
    let to = format!("{}:{}", s.lab.pod("gateway").ip4, crate::GATEWAY_PORT);
    s.grpc("outsider", &to, 2, headers)["servers"].clone()
}

fn grpc_exact_method_matching(s: &mut Suite) {
    s.apply(&grpc_route("exact-matching", "  - matches: [{method: {service: echo.Echo, method: Unary}}]\n    backendRefs: [{name: infra-backend-v2, port: 9090}]\n  - matches: [{method: {service: echo.Other, method: Unary}}]\n    backendRefs: [{name: infra-backend-v1, port: 9090}]\n"));
    assert_eq!(grpc_servers(s, &[])["infra-backend-v2"], 2);
}

fn grpc_route_header_matching(s: &mut Suite) {
    s.apply(&grpc_route("grpc-header-matching", "  - matches: [{headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 9090}]\n  - matches: [{headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 9090}]\n"));
    assert_eq!(grpc_servers(s, &["version:one"])["infra-backend-v1"], 2);
    assert_eq!(grpc_servers(s, &["version:two"])["infra-backend-v2"], 2);
}
