//! The cases of the conformance table (`authz_cases`), by cause. Sources: istiod's
//! ambient translation (pilot/.../ambient/authorization.go: `handleRule`,
//! `l4WhenAttributes`, `convertedSelectorPeerAuthentications`), ztunnel's rbac.rs
//! tests, Istio's webhook (pkg/config/validation, pkg/config/security) and the
//! istio.io reference pages.
use super::case::{
    ap, case, pa, Ask,
    Ask::{Gateway, Http, Plaintext, L4},
    Case,
    From::{Other, Plaintext as Plain, Sleep},
    Judging::{L4Only, PerRequest},
    Want::{Allow, Deny, DryRun, Refused, Strict},
};

fn req(from: super::case::From, method: &'static str, port: u16, path: &'static str) -> Ask {
    Http(from, port, method, path, "httpbin.foo", None, None)
}

const SEL: &str = "selector: {matchLabels: {app: httpbin}}";

/// Cause 1: the `when` keys ztunnel enforces at L4.
fn l4_when() -> Vec<Case> {
    vec![
        case(
            "ALLOW when destination.port at L4",
            "istiod l4WhenAttributes; ztunnel rbac.rs destination_ports",
            ap("foo", "p", &format!("{{{SEL}, rules: [{{when: [{{key: destination.port, values: [\"8080\"]}}]}}]}}")),
            vec![
                (L4(Sleep, 8080, L4Only), Allow),
                (L4(Sleep, 9090, L4Only), Deny),
                (L4(Plain, 8080, L4Only), Allow),
                (L4(Sleep, 9090, PerRequest), Deny),
                (req(Sleep, "GET", 9090, "/"), Deny),
                (req(Sleep, "GET", 8080, "/"), Allow),
            ],
        ),
        case(
            "DENY when source.ip at L4 and L7",
            "istiod l4WhenAttributes source.ip",
            ap("foo", "p", "{action: DENY, rules: [{when: [{key: source.ip, values: [10.0.0.0/24]}]}]}"),
            vec![
                (L4(Sleep, 8080, L4Only), Deny),
                (L4(Sleep, 8080, PerRequest), Deny),
                (L4(Other, 8080, L4Only), Allow),
                (req(Sleep, "GET", 8080, "/"), Deny),
                (req(Other, "GET", 8080, "/"), Allow),
            ],
        ),
        case(
            "DENY when source.ip notValues",
            "istio.io Condition notValues",
            ap("foo", "p", "{action: DENY, rules: [{when: [{key: source.ip, notValues: [10.0.0.1]}]}]}"),
            vec![(L4(Other, 8080, L4Only), Deny), (L4(Sleep, 8080, L4Only), Allow)],
        ),
        case(
            "ALLOW when source.namespace / source.principal / destination.ip",
            "istiod l4WhenAttributes",
            ap("foo", "p", "{rules: [{when: [{key: source.namespace, values: [foo]}, {key: source.principal, values: [\"cluster.local/ns/foo/*\"]}, {key: destination.ip, values: [10.0.0.2/32]}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow), (L4(Other, 8080, L4Only), Deny), (L4(Plain, 8080, L4Only), Deny)],
        ),
        case(
            "DENY when destination.port at the waypoint",
            "istio.io conditions: destination.port HTTP and TCP",
            ap("foo", "p", "{action: DENY, rules: [{when: [{key: destination.port, values: [\"8080\"]}]}]}"),
            vec![(req(Sleep, "GET", 8080, "/"), Deny), (req(Sleep, "GET", 9090, "/"), Allow)],
        ),
        case(
            "ALLOW when request.auth.audiences",
            "istio.io conditions: request.auth.audiences",
            ap("foo", "p", "{rules: [{when: [{key: request.auth.audiences, values: [api]}]}]}"),
            vec![
                (Http(Sleep, 8080, "GET", "/", "httpbin.foo", None, Some("api")), Allow),
                (Http(Sleep, 8080, "GET", "/", "httpbin.foo", None, Some("web")), Deny),
                (L4(Sleep, 8080, L4Only), Deny),
            ],
        ),
        case(
            "destination.port values compared as numbers",
            "Istio ValidatePorts (ParseUint)",
            ap("foo", "p", "{rules: [{when: [{key: destination.port, values: [\"08080\"]}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow)],
        ),
    ]
}

/// Causes 2 and 3: rules with HTTP attributes where only L4 decides.
fn http_at_l4() -> Vec<Case> {
    vec![
        case(
            "ALLOW principal + methods is dropped at L4",
            "istiod handleRule: L7 policies never match for ALLOW",
            ap("foo", "p", &format!("{{{SEL}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/foo/sa/sleep]}}}}], to: [{{operation: {{methods: [GET]}}}}]}}]}}")),
            vec![
                (L4(Sleep, 8080, L4Only), Deny),
                (L4(Sleep, 8080, PerRequest), Allow),
                (L4(Other, 8080, PerRequest), Deny),
                (req(Sleep, "GET", 8080, "/"), Allow),
                (req(Sleep, "POST", 8080, "/"), Deny),
            ],
        ),
        case(
            "ALLOW: an L4 rule still matches beside a dropped HTTP rule",
            "istiod handleRule drops rules, not policies",
            ap("foo", "p", "{rules: [{to: [{operation: {ports: [\"9000\"]}}]}, {to: [{operation: {paths: [/admin]}}]}]}"),
            vec![(L4(Sleep, 9000, L4Only), Allow), (L4(Sleep, 8080, L4Only), Deny)],
        ),
        case(
            "ALLOW when request.headers / source.serviceAccount is HTTP at L4",
            "istiod l4WhenAttributes (source.serviceAccount is not in it)",
            ap("foo", "p", "{rules: [{when: [{key: source.serviceAccount, values: [sleep]}]}]}"),
            vec![(L4(Sleep, 8080, L4Only), Deny), (req(Sleep, "GET", 8080, "/"), Allow), (req(Other, "GET", 8080, "/"), Deny)],
        ),
        case(
            "DENY methods + ports keeps its port at L4",
            "istiod handleRule: DENY policy with HTTP attributes is enforced without the HTTP rules",
            ap("foo", "p", "{action: DENY, rules: [{to: [{operation: {methods: [POST], ports: [\"8080\"]}}]}]}"),
            vec![
                (L4(Sleep, 8080, L4Only), Deny),
                (L4(Sleep, 9090, L4Only), Allow),
                (L4(Sleep, 8080, PerRequest), Allow),
                (req(Sleep, "GET", 8080, "/"), Allow),
                (req(Sleep, "POST", 8080, "/"), Deny),
                (req(Sleep, "POST", 9090, "/"), Allow),
            ],
        ),
        case(
            "DENY with only HTTP fields denies every connection at L4",
            "Istio webhook warning: will deny all traffic to TCP ports",
            ap("foo", "p", "{action: DENY, rules: [{when: [{key: \"request.headers[x-block]\", values: [\"yes\"]}]}]}"),
            vec![
                (L4(Sleep, 8080, L4Only), Deny),
                (req(Sleep, "GET", 8080, "/"), Allow),
                (Http(Sleep, 8080, "GET", "/", "httpbin.foo", Some(("x-block", "yes")), None), Deny),
            ],
        ),
        case(
            "DENY notValues on a missing header matches",
            "Envoy RBAC: not(header) with the header absent",
            ap("foo", "p", "{action: DENY, rules: [{when: [{key: \"request.headers[x-token]\", notValues: [\"*\"]}]}]}"),
            vec![
                (req(Sleep, "GET", 8080, "/"), Deny),
                (Http(Sleep, 8080, "GET", "/", "httpbin.foo", Some(("x-token", "t")), None), Allow),
            ],
        ),
        case(
            "remoteIpBlocks at L7, HTTP at L4",
            "istiod httpSources: remoteIpBlocks",
            ap("foo", "p", "{rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/24]}}]}]}"),
            vec![(req(Sleep, "GET", 8080, "/"), Allow), (req(Other, "GET", 8080, "/"), Deny), (L4(Sleep, 8080, L4Only), Deny)],
        ),
    ]
}

/// Cause 4: dry run.
fn dry_run() -> Vec<Case> {
    let dry = |v: &str, action: &str, rules: &str| {
        format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: d, namespace: foo, annotations: {{istio.io/dry-run: \"{v}\"}}}}\nspec: {{action: {action}, rules: {rules}}}\n")
    };
    vec![
        case(
            "dry-run DENY all is not enforced",
            "istio.io dry-run task",
            dry("true", "DENY", "[{}]"),
            vec![
                (
                    L4(Sleep, 8080, L4Only),
                    DryRun {
                        allow: true,
                        would_allow: false,
                    },
                ),
                (
                    req(Sleep, "GET", 8080, "/"),
                    DryRun {
                        allow: true,
                        would_allow: false,
                    },
                ),
            ],
        ),
        case(
            "dry-run ALLOW reports would-allow / would-deny",
            "Envoy shadow rules per action",
            dry(
                "true",
                "ALLOW",
                "[{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}]",
            ),
            vec![
                (
                    L4(Sleep, 8080, L4Only),
                    DryRun {
                        allow: true,
                        would_allow: true,
                    },
                ),
                (
                    L4(Other, 8080, L4Only),
                    DryRun {
                        allow: true,
                        would_allow: false,
                    },
                ),
            ],
        ),
        case(
            "a dry-run value that does not parse is enforced",
            "Istio isDryRun: strconv.ParseBool",
            dry("nope", "DENY", "[{}]"),
            vec![(L4(Sleep, 8080, L4Only), Deny)],
        ),
    ]
}

/// Cause 5: the root namespace.
fn root_namespace() -> Vec<Case> {
    let mesh = "---\napiVersion: ferrymesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {rootNamespace: mesh-root}\n";
    vec![
        case(
            "a policy in istio-system applies mesh-wide",
            "istio.io: root namespace, default istio-system",
            ap("istio-system", "p", "{action: DENY, rules: [{}]}"),
            vec![(L4(Sleep, 8080, L4Only), Deny)],
        ),
        case(
            "a policy elsewhere is namespace-local",
            "istio.io AuthorizationPolicy scope",
            ap("ferrymesh-system", "p", "{action: DENY, rules: [{}]}"),
            vec![(L4(Sleep, 8080, L4Only), Allow)],
        ),
        case(
            "a configured root namespace",
            "MeshConfig rootNamespace",
            format!(
                "{mesh}{}{}",
                ap(
                    "mesh-root",
                    "p",
                    "{action: DENY, rules: [{from: [{source: {namespaces: [bar]}}]}]}"
                ),
                ap("istio-system", "q", "{action: DENY, rules: [{}]}")
            ),
            vec![
                (L4(Other, 8080, L4Only), Deny),
                (L4(Sleep, 8080, L4Only), Allow),
            ],
        ),
        case(
            "a root-namespace selector reaches every namespace",
            "istio.io: root namespace policy, selector restricts it",
            ap(
                "istio-system",
                "p",
                &format!("{{action: DENY, {SEL}, rules: [{{}}]}}"),
            ),
            vec![(L4(Sleep, 8080, L4Only), Deny), (Gateway(Sleep), Allow)],
        ),
    ]
}

/// Cause 6: PeerAuthentication.
fn peer_authentication() -> Vec<Case> {
    let mode = |m: &str| format!("{{mtls: {{mode: {m}}}}}");
    let wl = |m: &str, ports: &str| {
        format!("{{{SEL}, mtls: {{mode: {m}}}, portLevelMtls: {{{ports}}}}}")
    };
    let src = "istiod convertedSelectorPeerAuthentications";
    vec![
        case(
            "mesh STRICT",
            src,
            pa("istio-system", "m", None, &mode("STRICT")),
            vec![(Plaintext(8080), Strict(true))],
        ),
        case(
            "namespace PERMISSIVE over mesh STRICT",
            src,
            pa("istio-system", "m", None, &mode("STRICT"))
                + &pa("foo", "n", None, &mode("PERMISSIVE")),
            vec![(Plaintext(8080), Strict(false))],
        ),
        case(
            "namespace UNSET inherits mesh STRICT",
            src,
            pa("istio-system", "m", None, &mode("STRICT")) + &pa("foo", "n", None, &mode("UNSET")),
            vec![(Plaintext(8080), Strict(true))],
        ),
        case(
            "workload PERMISSIVE over namespace STRICT",
            src,
            pa("foo", "n", None, &mode("STRICT"))
                + &pa(
                    "foo",
                    "w",
                    None,
                    &format!("{{{SEL}, mtls: {{mode: PERMISSIVE}}}}"),
                ),
            vec![(Plaintext(8080), Strict(false))],
        ),
        case(
            "workload STRICT over namespace PERMISSIVE",
            src,
            pa("foo", "n", None, &mode("PERMISSIVE"))
                + &pa(
                    "foo",
                    "w",
                    None,
                    &format!("{{{SEL}, mtls: {{mode: STRICT}}}}"),
                ),
            vec![(Plaintext(8080), Strict(true))],
        ),
        case(
            "DISABLE is as PERMISSIVE",
            "ambient enforces STRICT only",
            pa("foo", "n", None, &mode("DISABLE")),
            vec![(Plaintext(8080), Strict(false))],
        ),
        case(
            "workload STRICT with one port PERMISSIVE",
            "istiod convertPeerAuthentication NotDestinationPorts",
            pa(
                "foo",
                "w",
                None,
                &wl("STRICT", "\"8080\": {mode: PERMISSIVE}"),
            ),
            vec![
                (Plaintext(8080), Strict(false)),
                (Plaintext(9090), Strict(true)),
            ],
        ),
        case(
            "workload PERMISSIVE with one port STRICT",
            "istiod convertPeerAuthentication DestinationPorts",
            pa(
                "foo",
                "w",
                None,
                &wl("PERMISSIVE", "\"8080\": {mode: STRICT}"),
            ),
            vec![
                (Plaintext(8080), Strict(true)),
                (Plaintext(9090), Strict(false)),
            ],
        ),
    ]
}

/// Cause 6, continued: inheritance, age, scope and webhook checks.
fn peer_authentication_more() -> Vec<Case> {
    let mode = |m: &str| format!("{{mtls: {{mode: {m}}}}}");
    let wl = |m: &str, ports: &str| {
        format!("{{{SEL}, mtls: {{mode: {m}}}, portLevelMtls: {{{ports}}}}}")
    };
    let src = "istiod convertedSelectorPeerAuthentications";
    vec![
        case(
            "workload UNSET, port UNSET inherit namespace STRICT",
            src,
            pa("foo", "n", None, &mode("STRICT"))
                + &pa(
                    "foo",
                    "w",
                    None,
                    &wl(
                        "UNSET",
                        "\"8080\": {mode: UNSET}, \"9090\": {mode: PERMISSIVE}",
                    ),
                ),
            vec![
                (Plaintext(8080), Strict(true)),
                (Plaintext(9090), Strict(false)),
                (Plaintext(7070), Strict(true)),
            ],
        ),
        case(
            "the oldest of two namespace policies wins",
            "istiod getOldestPeerAuthn",
            pa(
                "foo",
                "b-new",
                Some("2024-02-01T00:00:00Z"),
                &mode("PERMISSIVE"),
            ) + &pa(
                "foo",
                "a-old",
                Some("2023-01-01T00:00:00Z"),
                &mode("STRICT"),
            ),
            vec![(Plaintext(8080), Strict(true))],
        ),
        case(
            "the oldest wins, whatever its name",
            "istiod getOldestPeerAuthn",
            pa(
                "foo",
                "a-new",
                Some("2024-02-01T00:00:00Z"),
                &mode("STRICT"),
            ) + &pa(
                "foo",
                "b-old",
                Some("2023-01-01T00:00:00Z"),
                &mode("PERMISSIVE"),
            ),
            vec![(Plaintext(8080), Strict(false))],
        ),
        case(
            "a workload policy in the root namespace is not mesh-wide",
            "istiod: workload policies outside the root namespace only",
            pa(
                "istio-system",
                "w",
                None,
                &format!("{{{SEL}, mtls: {{mode: STRICT}}}}"),
            ),
            vec![(Plaintext(8080), Strict(false))],
        ),
        case(
            "portLevelMtls needs a selector",
            "Istio ValidatePeerAuthentication",
            pa(
                "foo",
                "n",
                None,
                "{mtls: {mode: STRICT}, portLevelMtls: {\"8080\": {mode: PERMISSIVE}}}",
            ),
            vec![(
                Plaintext(8080),
                Refused("mesh/namespace peer authentication cannot have port level mTLS"),
            )],
        ),
        case(
            "portLevelMtls port range",
            "Istio ValidatePeerAuthentication",
            pa("foo", "w", None, &wl("STRICT", "\"0\": {mode: PERMISSIVE}")),
            vec![(Plaintext(8080), Refused("port must be in range 1..65535"))],
        ),
    ]
}

pub fn cases() -> Vec<Case> {
    let mut all = l4_when();
    all.extend(http_at_l4());
    all.extend(dry_run());
    all.extend(root_namespace());
    all.extend(peer_authentication());
    all.extend(peer_authentication_more());
    all.extend(super::table_fields::cases());
    all
}
