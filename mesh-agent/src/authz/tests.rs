use super::*;
use crate::config;

fn policies(yaml: &str) -> Vec<AuthorizationPolicy> {
    config::parse("t", yaml)
        .expect("policy yaml")
        .authorization_policies
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
        let ps: Vec<AuthorizationPolicy> = c.policies.iter().flat_map(|y| policies(y)).collect();
        let id = c.source.map(|s| s.parse::<Identity>().expect("identity"));
        let labels: BTreeMap<String, String> = c
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
                destination_port: c.port,
                l7: L7::None,
            },
        );
        assert_eq!(v.allowed(), c.allowed, "{}: {v:?}", c.name);
        assert_eq!(!v.audited.is_empty(), c.audited, "{}: {v:?}", c.name);
    }
}
