//! Hosts, `notHosts`, and what policy does with what it cannot understand.
use super::*;

#[test]
fn hosts_match_case_insensitively_with_or_without_a_port() {
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-host, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {hosts: ["Admin.Shop", "*.internal"]}}]
"#,
    );
    let labels = Labels::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
    };
    let headers = http::HeaderMap::new();
    let source: Identity = "spiffe://cluster.local/ns/shop/sa/client"
        .parse()
        .expect("id");
    // The waypoint hands hosts over lower-cased (its normalize phase).
    for (host, denied) in [
        ("admin.shop", true),
        ("admin.shop:8080", true),
        ("db.internal:5432", true),
        ("[2001:db8::1]:80", false),
        ("web.shop", false),
        ("admin.shop.evil", false),
    ] {
        let req = Request {
            method: "GET",
            path: "/",
            host,
            headers: &headers,
            principal: None,
            claims: None,
            remote_ip: "198.19.1.10".parse().expect("ip"),
        };
        let conn = Connection {
            source: Some(&source),
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::Request(&req),
        };
        assert_eq!(!evaluate(&ps, target, &conn).allowed(), denied, "{host}");
    }
}

#[test]
fn what_cannot_be_understood_never_widens_access() {
    let yaml = |action: &str, extra_source: &str, extra_rule: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  action: {action}\n  rules:\n  - from: [{{source: {{principals: [\"cluster.local/ns/shop/sa/client\"]{extra_source}}}}}]\n{extra_rule}"
        )
    };
    let client: Identity = "spiffe://cluster.local/ns/shop/sa/client"
        .parse()
        .expect("id");
    let other: Identity = "spiffe://cluster.local/ns/shop/sa/other"
        .parse()
        .expect("id");
    let labels = Labels::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
    };
    let allowed = |ps: &[Policy], who: &Identity| {
        let conn = Connection {
            source: Some(who),
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::PerRequest,
        };
        evaluate(ps, target, &conn).allowed()
    };
    // (name, policy, client allowed, other allowed, degraded notes)
    let cases = [
        ("plain ALLOW", yaml("ALLOW", "", ""), true, false, 0),
        (
            "ALLOW with an unknown rule field matches nothing",
            yaml("ALLOW", "", "    fancy: true\n"),
            false,
            false,
            1,
        ),
        (
            "DENY with an unknown source field",
            yaml("DENY", ", future: [x]", ""),
            false,
            true,
            1,
        ),
    ];
    for (name, text, want_client, want_other, notes) in cases {
        let ps = policies(&text);
        assert_eq!(allowed(&ps, &client), want_client, "{name}: client");
        assert_eq!(allowed(&ps, &other), want_other, "{name}: other");
        assert_eq!(ps[0].degraded.len(), notes, "{name}: {:?}", ps[0].degraded);
    }
    // What Istio's webhook refuses is refused, with its message.
    for (extra_source, extra_rule, message) in [
        (
            ", serviceAccounts: [x]",
            "",
            "cannot set serviceAccounts with namespaces or principals, found at rule 0",
        ),
        (
            ", ipBlocks: [10.0.0.0/33]",
            "",
            "bad CIDR range (10.0.0.0/33)",
        ),
        (
            "",
            "    to: [{operation: {ports: [\"http\"]}}]\n",
            "bad port (http)",
        ),
    ] {
        let text = yaml("ALLOW", extra_source, extra_rule);
        let o = config::parse("t", &text).expect("yaml");
        let e = compile(&o.authorization_policies[0], "istio-system").expect_err(&text);
        assert!(
            e.contains(message) && e.starts_with("invalid policy p.shop: "),
            "{e}"
        );
    }
}

#[test]
fn not_hosts_excludes_hosts() {
    let ps = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  rules:\n  - to: [{operation: {notHosts: [\"admin.shop\"]}}]\n",
    );
    assert!(ps[0].degraded.is_empty(), "{:?}", ps[0].degraded);
    let labels = Labels::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
    };
    let headers = http::HeaderMap::new();
    let id: Identity = "spiffe://cluster.local/ns/shop/sa/client"
        .parse()
        .expect("id");
    for (host, allowed) in [
        ("web.shop", true),
        ("admin.shop", false),
        ("admin.shop:80", false),
    ] {
        let req = Request {
            method: "GET",
            path: "/",
            host,
            headers: &headers,
            principal: None,
            claims: None,
            remote_ip: "198.19.1.10".parse().expect("ip"),
        };
        let conn = Connection {
            source: Some(&id),
            source_ip: "198.19.1.10".parse().expect("ip"),
            destination_ip: "198.19.1.20".parse().expect("ip"),
            destination_port: 8080,
            l7: L7::Request(&req),
        };
        assert_eq!(evaluate(&ps, target, &conn).allowed(), allowed, "{host}");
    }
}
