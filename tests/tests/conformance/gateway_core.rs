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
