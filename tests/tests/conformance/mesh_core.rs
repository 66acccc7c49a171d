//! The Mesh profile's core tests: GAMMA routes on the Services `echo`, `echo-v1`
//! and `echo-v2` of `gateway-conformance-mesh`, requests from `mesh-client`.
use super::mesh::{route, MESH};
use crate::{get, Req, Suite, ECHO};

pub const TESTS: &[crate::Test] = &[
    ("MeshBasic", basic),
    ("MeshFrontend", frontend),
    ("MeshSplit", split),
    ("MeshHTTPRouteSimpleSameNamespace", simple_same_namespace),
    ("MeshHTTPRouteMatching", matching),
    ("MeshHTTPRouteQueryParamMatching", query_param_matching),
    (
        "MeshHTTPRouteRequestHeaderModifier",
        request_header_modifier,
    ),
    ("MeshHTTPRouteRewritePath", rewrite_path),
    (
        "MeshHTTPRouteRedirectHostAndStatus",
        redirect_host_and_status,
    ),
    ("MeshHTTPRouteWeight", weight),
    ("MeshHTTPRouteNamedRule", named_rule),
];

const ECHO_V2: &str = "198.18.111.3";

fn http(name: &str, parent: &str, rules: &str) -> String {
    route("HTTPRoute", MESH, name, parent, "", rules)
}

fn from_client(s: &Suite, vip: &str, path: &str) -> crate::Resp {
    s.mesh("mesh-client", vip, &get("echo", path))
}

fn basic(s: &mut Suite) {
    s.apply("");
    for _ in 0..4 {
        let r = from_client(s, ECHO, "/");
        assert!(r.code == 200 && r.backend().starts_with("echo-v"), "{r:?}");
    }
}

fn frontend(s: &mut Suite) {
    s.apply(&http("mesh-frontend", "echo-v2", "  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Header-Set, value: set}]}}]\n    backendRefs: [{name: echo-v2, port: 80}]\n"));
    // Addressed to echo-v2: its route applies.
    let r = from_client(s, ECHO_V2, "/");
    assert_eq!(
        (r.code, r.backend(), r.header("x-header-set")),
        (200, "echo-v2", Some("set")),
        "{r:?}"
    );
    // Addressed to echo, even when echo-v2's pod answers: it does not.
    for _ in 0..6 {
        let r = from_client(s, ECHO, "/");
        assert_eq!((r.code, r.header("x-header-set")), (200, None), "{r:?}");
    }
}

fn split(s: &mut Suite) {
    s.apply(&http("mesh-split", "echo", "  - matches: [{path: {type: Exact, value: /v1}}]\n    backendRefs: [{name: echo-v1, port: 80}]\n  - matches: [{path: {type: Exact, value: /v2}}]\n    backendRefs: [{name: echo-v2, port: 80}]\n"));
    for (path, want) in [("/v1", "echo-v1"), ("/v2", "echo-v2")] {
        let r = from_client(s, ECHO, path);
        assert_eq!((r.code, r.backend()), (200, want), "{r:?}");
    }
}

fn simple_same_namespace(s: &mut Suite) {
    s.apply(&http(
        "mesh-simple",
        "echo",
        "  - backendRefs: [{name: echo-v1, port: 80}]\n",
    ));
    for _ in 0..4 {
        let r = from_client(s, ECHO, "/");
        assert_eq!((r.code, r.backend()), (200, "echo-v1"), "{r:?}");
    }
}

fn matching(s: &mut Suite) {
    s.apply(&http("mesh-matching", "echo", "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: echo-v1, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: echo-v2, port: 80}]\n"));
    let with = |path, version: Option<&'static str>| {
        let mut r = get("echo", path);
        r.headers.extend(version.map(|v| ("version", v)));
        r
    };
    for (req, want) in [
        (with("/", None), "echo-v1"),
        (with("/example", None), "echo-v1"),
        (with("/", Some("one")), "echo-v1"),
        (with("/v2", None), "echo-v2"),
        (with("/v2/example", None), "echo-v2"),
        (with("/", Some("two")), "echo-v2"),
    ] {
        let r = s.mesh("mesh-client", ECHO, &req);
        assert_eq!((r.code, r.backend()), (200, want), "{req:?}: {r:?}");
    }
}

fn query_param_matching(s: &mut Suite) {
    s.apply(&http("mesh-query-param-matching", "echo", "  - matches: [{queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{name: echo-v1, port: 80}]\n  - matches: [{queryParams: [{name: animal, value: dolphin}]}]\n    backendRefs: [{name: echo-v2, port: 80}]\n"));
    for (path, want) in [
        ("/?animal=whale", Some("echo-v1")),
        ("/?animal=dolphin", Some("echo-v2")),
        ("/?animal=dog", None),
    ] {
        let r = from_client(s, ECHO, path);
        match want {
            Some(b) => assert_eq!((r.code, r.backend()), (200, b), "{path}: {r:?}"),
            None => assert_eq!(r.code, 404, "{path}: {r:?}"),
        }
    }
}

fn request_header_modifier(s: &mut Suite) {
    s.apply(&http("mesh-request-header-modifier", "echo", "  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: X-Header-Set, value: set-overwrites-values}]\n        add: [{name: X-Header-Add, value: add-appends-values}]\n        remove: [X-Header-Remove]\n    backendRefs: [{name: echo-v1, port: 80}]\n"));
    let req = Req {
        headers: vec![
            ("X-Header-Set", "some-other-value"),
            ("X-Header-Remove", "val"),
        ],
        ..get("echo", "/")
    };
    let r = s.mesh("mesh-client", ECHO, &req);
    assert_eq!(
        r.seen_header("x-header-set"),
        Some("set-overwrites-values"),
        "{r:?}"
    );
    assert_eq!(
        r.seen_header("x-header-add"),
        Some("add-appends-values"),
        "{r:?}"
    );
    assert_eq!(r.seen_header("x-header-remove"), None, "{r:?}");
}

fn rewrite_path(s: &mut Suite) {
    s.apply(&http("mesh-rewrite-path", "echo", "  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]\n    backendRefs: [{name: echo-v1, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /full/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]\n    backendRefs: [{name: echo-v1, port: 80}]\n"));
    for (path, seen) in [("/prefix/one/two", "/one/two"), ("/full/one/two", "/one")] {
        let r = from_client(s, ECHO, path);
        assert_eq!(
            (r.code, r.echo["path"].as_str()),
            (200, Some(seen)),
            "{path}: {r:?}"
        );
    }
}

fn redirect_host_and_status(s: &mut Suite) {
    s.apply(&http("mesh-redirect-host-and-status", "echo", "  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]\n  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]\n"));
    let r = from_client(s, ECHO, "/hostname-redirect");
    assert_eq!(
        (r.code, r.header("location")),
        (302, Some("http://example.org/hostname-redirect")),
        "{r:?}"
    );
    let r = from_client(s, ECHO, "/host-and-status");
    assert_eq!(
        (r.code, r.header("location")),
        (301, Some("http://example.org/host-and-status")),
        "{r:?}"
    );
}

fn weight(s: &mut Suite) {
    s.apply(&http("mesh-weighted-backends", "echo", "  - backendRefs: [{name: echo-v1, port: 80, weight: 70}, {name: echo-v2, port: 80, weight: 30}]\n"));
    let mut v1 = 0;
    for _ in 0..100 {
        let r = from_client(s, ECHO, "/");
        assert_eq!(r.code, 200, "{r:?}");
        v1 += u32::from(r.backend() == "echo-v1");
    }
    // 70/30 of 100: outside these bounds only with a broken split.
    assert!((50..=88).contains(&v1), "echo-v1 served {v1}");
}

fn named_rule(s: &mut Suite) {
    s.apply(&http("mesh-named-rule", "echo", "  - name: named-rule\n    matches: [{path: {type: PathPrefix, value: /named}}]\n    backendRefs: [{name: echo-v1, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /unnamed}}]\n    backendRefs: [{name: echo-v2, port: 80}]\n"));
    for (path, want) in [("/named", "echo-v1"), ("/unnamed", "echo-v2")] {
        let r = from_client(s, ECHO, path);
        assert_eq!((r.code, r.backend()), (200, want), "{path}: {r:?}");
    }
}
