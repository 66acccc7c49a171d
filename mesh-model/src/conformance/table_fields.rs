//! Conformance cases, cause 7: fields, their matching and Istio's webhook checks;
//! `targetRefs` and CUSTOM.
use super::case::{
    ap, case, Ask,
    Ask::{Gateway, Http, ServiceHttp, L4},
    Case,
    From::{Other, Plaintext as Plain, Sleep},
    Judging::L4Only,
    Want::{Allow, Deny, Refused},
};

fn get(path: &'static str, host: &'static str) -> Ask {
    Http(Sleep, 8080, "GET", path, host, None, None)
}

const WEBHOOK: &str = "Istio ValidateAuthorizationPolicy";

/// Matching of the fields Istio has.
fn matching() -> Vec<Case> {
    vec![
        case(
            "hosts match case-insensitively",
            "istio.io Operation.hosts",
            ap("foo", "p", "{rules: [{to: [{operation: {hosts: [Httpbin.Foo]}}]}]}"),
            vec![(get("/", "httpbin.foo"), Allow), (get("/", "HTTPBIN.foo:8080"), Allow), (get("/", "other.foo"), Deny)],
        ),
        case(
            "notHosts",
            "istio.io Operation.notHosts",
            ap("foo", "p", "{rules: [{to: [{operation: {notHosts: [admin.foo]}}]}]}"),
            vec![(get("/", "admin.foo"), Deny), (get("/", "httpbin.foo"), Allow)],
        ),
        case(
            "ports compared as numbers",
            "Istio ValidatePorts (ParseUint)",
            ap("foo", "p", "{rules: [{to: [{operation: {ports: [\"08080\"]}}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow), (L4(Sleep, 80, L4Only), Deny)],
        ),
        case(
            "serviceAccounts of the policy's namespace or ns/sa",
            "istiod stringToServiceAccountMatch",
            ap("foo", "p", "{rules: [{from: [{source: {serviceAccounts: [sleep]}}, {source: {serviceAccounts: [bar/client]}}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow), (L4(Other, 8080, L4Only), Allow), (L4(Plain, 8080, L4Only), Deny)],
        ),
        case(
            "notServiceAccounts in a DENY",
            "istio.io Source.notServiceAccounts",
            ap("foo", "p", "{action: DENY, rules: [{from: [{source: {notServiceAccounts: [sleep]}}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow), (L4(Other, 8080, L4Only), Deny)],
        ),
        case(
            "path templates",
            "istio.io Operation.paths {*} {**}",
            ap("foo", "p", "{rules: [{to: [{operation: {paths: [\"/api/{*}/items\", \"/files/{**}\"]}}]}]}"),
            vec![
                (get("/api/v1/items", "h"), Allow),
                (get("/api/v1/v2/items", "h"), Deny),
                (get("/files/a/b", "h"), Allow),
                (get("/files", "h"), Deny),
            ],
        ),
        case(
            "an empty spec allows nothing",
            "istio.io: allow-nothing policy",
            ap("foo", "p", "{}"),
            vec![(L4(Sleep, 8080, L4Only), Deny), (get("/", "h"), Deny)],
        ),
        case(
            "targetRefs Service: requests addressed to it",
            "istio.io targetRefs; waypoint-enforced",
            ap("foo", "p", "{targetRefs: [{kind: Service, group: \"\", name: httpbin}], action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}"),
            vec![(ServiceHttp(Sleep, "/admin"), Deny), (ServiceHttp(Sleep, "/x"), Allow), (get("/admin", "h"), Allow)],
        ),
        case(
            "targetRefs Gateway: its workloads",
            "istio.io targetRefs Gateway",
            ap("foo", "p", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: ingress}], rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}]}"),
            vec![(Gateway(Sleep), Allow), (Gateway(Other), Deny), (L4(Other, 8080, L4Only), Allow)],
        ),
        case(
            "CUSTOM is enforced as a DENY of what its rules match",
            "ferrymesh: no ext_authz provider; fail closed",
            ap("foo", "p", "{action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: [/admin]}}]}]}"),
            vec![(get("/admin", "h"), Deny), (get("/x", "h"), Allow), (L4(Sleep, 8080, L4Only), Deny)],
        ),
    ]
}

/// What Istio's webhook refuses.
fn refused() -> Vec<Case> {
    let l4 = || L4(Sleep, 8080, L4Only);
    let one = |name: &'static str, spec: &str, message: &'static str| {
        case(
            name,
            WEBHOOK,
            ap("foo", "p", spec),
            vec![(l4(), Refused(message))],
        )
    };
    vec![
        one("source: {}", "{rules: [{from: [{source: {}}]}]}", "`from.source` must not be empty, found at rule 0"),
        one("operation: {}", "{rules: [{to: [{operation: {}}]}]}", "`to.operation` must not be empty, found at rule 0"),
        one("an unknown when key", "{rules: [{when: [{key: request.foo, values: [x]}]}]}", "unknown attribute: request.foo"),
        one("a when with neither values nor notValues", "{rules: [{when: [{key: source.ip}]}]}", "at least one of `values` or `notValues` must be set for key source.ip"),
        one("a bad when IP", "{rules: [{when: [{key: source.ip, values: [nope]}]}]}", "invalid `value` for `key` source.ip: bad IP address (nope)"),
        one("a bad header key", "{rules: [{when: [{key: \"request.headers[]\", values: [x]}]}]}", "bad key (request.headers[]): should have format a[b]"),
        one("destination.namespace", "{rules: [{when: [{key: destination.namespace, values: [x]}]}]}", "attribute destination.namespace is replaced by the metadata.namespace"),
        one("a bad port", "{rules: [{to: [{operation: {ports: [http]}}]}]}", "bad port (http)"),
        one("an empty principal", "{rules: [{from: [{source: {principals: [\"\"]}}]}]}", "empty value not allowed, found in Principals"),
        one("serviceAccounts with principals", "{rules: [{from: [{source: {serviceAccounts: [a], principals: [b]}}]}]}", "cannot set serviceAccounts with namespaces or principals, found at rule 0"),
        one("a wildcard service account", "{rules: [{from: [{source: {serviceAccounts: [\"*\"]}}]}]}", "wildcard not allowed, found in ServiceAccounts"),
        one("a bad path template", "{rules: [{to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}]}", "{**} is not the last operator"),
        one("targetRefs and a selector", "{selector: {matchLabels: {app: httpbin}}, targetRefs: [{kind: Service, name: httpbin}]}", "only one of targetRefs or workloadSelector can be set"),
        one("a cross-namespace targetRef", "{targetRefs: [{kind: Service, name: httpbin, namespace: bar}]}", "cross namespace referencing is not supported"),
        one("a targetRef to a ServiceEntry", "{targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: x}]}", "targetRef to a ServiceEntry is not supported by ferrymesh"),
        one("a wildcard selector", "{selector: {matchLabels: {app: \"*\"}}}", "wildcard is not supported in selector"),
        one("DENY without rules", "{action: DENY}", "DENY action without `rules` is meaningless"),
        one("CUSTOM without a provider", "{action: CUSTOM, rules: [{}]}", "`provider.name` must not be empty"),
        one("a provider on an ALLOW", "{provider: {name: ext}, rules: [{}]}", "`provider` must not be with non CUSTOM action, found ALLOW"),
    ]
}

pub fn cases() -> Vec<Case> {
    let mut all = matching();
    all.extend(refused());
    all
}
