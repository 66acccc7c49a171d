use super::*;
use crate::{config, identity::Identity, model::Labels};

fn policies(yaml: &str) -> Vec<Policy> {
    config::parse("t", yaml)
        .expect("policy yaml")
        .authorization_policies
        .iter()
        .map(|p| compile(p, "istio-system").expect("compiles"))
        .collect()
}

/// The policies that apply to `target`, decided (as the compiled state does).
fn evaluate(ps: &[Policy], target: Target<'_>, c: &Connection<'_>) -> Verdict {
    authorize(ps.iter().filter(|p| applies(p, target)), c)
}

const ALLOW_CLIENT: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {ports: ["8080"]}}]
"#;

const DENY_LEGACY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["legacy"]}}]
"#;

const AUDIT_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec:
  action: AUDIT
  rules: [{}]
"#;

const DENY_ALL_EMPTY_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: shop}
spec: {}
"#;

const IP_BLOCK: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-node-a, namespace: shop}
spec:
  rules:
  - from: [{source: {ipBlocks: ["198.19.1.0/24"], notPrincipals: ["*/sa/intruder"]}}]
"#;

struct Case {
    name: &'static str,
    policies: &'static [&'static str],
    source: Option<&'static str>,
    ip: &'static str,
    port: u16,
    labels: &'static [(&'static str, &'static str)],
    allowed: bool,
    audited: bool,
}

#[test]
fn l4_authorization_matrix() {
    let cases = [
        Case {
            name: "no policy allows",
            policies: &[],
            source: None,
            ip: "198.19.2.5",
            port: 8080,
            labels: &[("app", "server")],
            allowed: true,
            audited: false,
        },
        Case {
            name: "allow by principal",
            policies: &[ALLOW_CLIENT],
            source: Some("spiffe://cluster.local/ns/shop/sa/client"),
            ip: "198.19.1.10",
            port: 8080,
            labels: &[("app", "server")],
            allowed: true,
            audited: false,
        },
        Case {
            name: "other principal not allowed",
            policies: &[ALLOW_CLIENT],
            source: Some("spiffe://cluster.local/ns/shop/sa/other"),
            ip: "198.19.1.10",
            port: 8080,
            labels: &[("app", "server")],
            allowed: false,
            audited: false,
        },
        Case {
            name: "plaintext has no principal",
            policies: &[ALLOW_CLIENT],
            source: None,
            ip: "198.19.1.10",
            port: 8080,
            labels: &[("app", "server")],
            allowed: false,
            audited: false,
        },
        Case {
            name: "port rule: other port refused",
            policies: &[ALLOW_CLIENT],
            source: Some("spiffe://cluster.local/ns/shop/sa/client"),
            ip: "198.19.1.10",
            port: 9090,
            labels: &[("app", "server")],
            allowed: false,
            audited: false,
        },
        Case {
            name: "selector does not pick this workload",
            policies: &[ALLOW_CLIENT],
            source: Some("spiffe://cluster.local/ns/shop/sa/other"),
            ip: "198.19.1.10",
            port: 8080,
            labels: &[("app", "db")],
            allowed: true,
            audited: false,
        },
        Case {
            name: "deny by namespace",
            policies: &[DENY_LEGACY],
            source: Some("spiffe://cluster.local/ns/legacy/sa/default"),
            ip: "198.19.1.11",
            port: 8080,
            labels: &[],
            allowed: false,
            audited: false,
        },
        Case {
            name: "deny before allow",
            policies: &[ALLOW_CLIENT, DENY_LEGACY],
            source: Some("spiffe://cluster.local/ns/legacy/sa/client"),
            ip: "198.19.1.11",
            port: 8080,
            labels: &[("app", "server")],
            allowed: false,
            audited: false,
        },
        Case {
            name: "audit marks but allows",
            policies: &[AUDIT_ALL],
            source: None,
            ip: "198.19.1.11",
            port: 1,
            labels: &[],
            allowed: true,
            audited: true,
        },
        Case {
            name: "empty allow policy denies all",
            policies: &[DENY_ALL_EMPTY_ALLOW],
            source: Some("spiffe://cluster.local/ns/shop/sa/client"),
            ip: "198.19.1.10",
            port: 8080,
            labels: &[],
            allowed: false,
            audited: false,
        },
        Case {
            name: "ip block allows",
            policies: &[IP_BLOCK],
            source: Some("spiffe://cluster.local/ns/shop/sa/client"),
            ip: "198.19.1.99",
            port: 1,
            labels: &[],
            allowed: true,
            audited: false,
        },
        Case {
            name: "ip block outside",
            policies: &[IP_BLOCK],
            source: Some("spiffe://cluster.local/ns/shop/sa/client"),
            ip: "198.19.2.99",
            port: 1,
            labels: &[],
            allowed: false,
            audited: false,
        },
        Case {
            name: "notPrincipals excludes",
            policies: &[IP_BLOCK],
            source: Some("spiffe://cluster.local/ns/shop/sa/intruder"),
            ip: "198.19.1.99",
            port: 1,
            labels: &[],
            allowed: false,
            audited: false,
        },
    ];
    for c in cases {
        let ps: Vec<Policy> = c.policies.iter().flat_map(|y| policies(y)).collect();
        let id = c.source.map(|s| s.parse::<Identity>().expect("identity"));
        let labels: Labels = c
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let v = evaluate(
            &ps,
            Target {
                namespace: "shop",
                labels: &labels,
            },
            &Connection {
                source: id.as_ref(),
                source_ip: c.ip.parse().expect("ip"),
                destination_ip: "198.19.1.20".parse().expect("ip"),
                destination_port: c.port,
                l7: L7::None,
            },
        );
        assert_eq!(v.allowed(), c.allowed, "{}: {v:?}", c.name);
        assert_eq!(!v.audited.is_empty(), c.audited, "{}: {v:?}", c.name);
    }
}

const L7_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/public/*", "/health"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    to: [{operation: {methods: [POST]}}]
    when: [{key: "request.auth.claims[group]", values: [admins]}]
"#;

const L7_DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE]}}]
  - when: [{key: "request.headers[x-block]", values: ["yes"]}]
"#;

#[test]
fn l7_rules_per_request_and_at_l4() {
    let client: Identity = "spiffe://cluster.local/ns/shop/sa/client"
        .parse()
        .expect("id");
    let other: Identity = "spiffe://cluster.local/ns/shop/sa/other"
        .parse()
        .expect("id");
    let admin_claims = serde_json::json!({"iss": "https://issuer.example", "sub": "alice", "group": ["admins", "x"]});
    let user_claims =
        serde_json::json!({"iss": "https://issuer.example", "sub": "bob", "group": "users"});
    struct C {
        name: &'static str,
        source: Identity,
        method: &'static str,
        path: &'static str,
        header: Option<(&'static str, &'static str)>,
        jwt: Option<&'static serde_json::Value>,
        allowed: bool,
    }
    let admin: &'static serde_json::Value = Box::leak(Box::new(admin_claims));
    let user: &'static serde_json::Value = Box::leak(Box::new(user_claims));
    let cases = [
        C {
            name: "GET on an allowed path",
            source: client.clone(),
            method: "GET",
            path: "/public/a",
            header: None,
            jwt: None,
            allowed: true,
        },
        C {
            name: "exact path",
            source: client.clone(),
            method: "HEAD",
            path: "/health",
            header: None,
            jwt: None,
            allowed: true,
        },
        C {
            name: "path not allowed",
            source: client.clone(),
            method: "GET",
            path: "/private",
            header: None,
            jwt: None,
            allowed: false,
        },
        C {
            name: "method not allowed",
            source: client.clone(),
            method: "PUT",
            path: "/public/a",
            header: None,
            jwt: None,
            allowed: false,
        },
        C {
            name: "principal not allowed",
            source: other.clone(),
            method: "GET",
            path: "/public/a",
            header: None,
            jwt: None,
            allowed: false,
        },
        C {
            name: "DENY by method beats ALLOW",
            source: client.clone(),
            method: "DELETE",
            path: "/public/a",
            header: None,
            jwt: None,
            allowed: false,
        },
        C {
            name: "DENY by header condition",
            source: client.clone(),
            method: "GET",
            path: "/public/a",
            header: Some(("x-block", "yes")),
            jwt: None,
            allowed: false,
        },
        C {
            name: "JWT principal + claim in a list",
            source: other.clone(),
            method: "POST",
            path: "/x",
            header: None,
            jwt: Some(admin),
            allowed: true,
        },
        C {
            name: "JWT claim does not match",
            source: other.clone(),
            method: "POST",
            path: "/x",
            header: None,
            jwt: Some(user),
            allowed: false,
        },
        C {
            name: "no JWT: no request principal",
            source: other.clone(),
            method: "POST",
            path: "/x",
            header: None,
            jwt: None,
            allowed: false,
        },
    ];
    let ps: Vec<Policy> = [L7_ALLOW, L7_DENY]
        .iter()
        .flat_map(|y| policies(y))
        .collect();
    let labels = Labels::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
    };
    for c in &cases {
        let mut headers = http::HeaderMap::new();
        if let Some((k, v)) = c.header {
            headers.insert(k, v.parse().expect("header"));
        }
        let principal = c.jwt.map(|j| {
            format!(
                "{}/{}",
                j["iss"].as_str().unwrap_or(""),
                j["sub"].as_str().unwrap_or("")
            )
        });
        let req = Request {
            method: c.method,
            path: c.path,
            host: "web",
            headers: &headers,
            principal: principal.as_deref(),
            claims: c.jwt,
            remote_ip: "198.19.1.10".parse().expect("ip"),
        };
        let conn = Connection {
            source: Some(&c.source),
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::Request(&req),
        };
        assert_eq!(
            evaluate(&ps, target, &conn).allowed(),
            c.allowed,
            "{}",
            c.name
        );
    }
    // At L4: a mesh source's waypoint judged the requests; ALLOW rules count on their
    // L4 parts and DENY rules with L7 fields were applied per request.
    let at_l4 = |source: Option<&Identity>, l7| {
        evaluate(
            &ps,
            target,
            &Connection {
                source,
                source_ip: "198.19.1.10".parse().expect("ip"),
                destination_ip: "198.19.1.20".parse().expect("ip"),
                destination_port: 8080,
                l7,
            },
        )
        .allowed()
    };
    assert!(
        at_l4(Some(&client), L7::PerRequest),
        "judged at source: allowed on L4 parts"
    );
    // Nobody judged the requests: ALLOW rules with L7 fields never match, DENY rules
    // match on their L4 parts (fail closed).
    assert!(
        !at_l4(Some(&client), L7::None),
        "not judged: L7 ALLOW cannot match"
    );
    let deny_only: Vec<Policy> = policies(L7_DENY);
    let v = evaluate(
        &deny_only,
        target,
        &Connection {
            source: None,
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::None,
        },
    );
    assert!(
        !v.allowed(),
        "not judged: an L7 DENY denies the whole connection"
    );
    let v = evaluate(
        &deny_only,
        target,
        &Connection {
            source: Some(&client),
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::PerRequest,
        },
    );
    assert!(
        v.allowed(),
        "judged at source: DENY rules were applied per request"
    );
}

mod conformance;
mod fail_closed;
