use super::*;
use mesh_model::config;

const CFG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ferrymesh.io/dataplane-mode: ambient}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: s1, namespace: shop, labels: {app: server}}
spec: {node: a, addresses: [198.19.1.10, "2001:db8:1:1::10"]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata: {name: s2, namespace: shop, labels: {app: server}}
spec: {node: b, addresses: [198.19.2.10]}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: shop}
spec:
  clusterIPs: [198.18.100.1, "2001:db8:100::1"]
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIPs: [198.18.100.2]
  selector: {app: nobody}
  ports: [{port: 80}]
"#;

fn state() -> State {
    State::build(1, config::parse("t", CFG).expect("test config"))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

struct Case {
    name: &'static str,
    dst: &'static str,
    want: Result<Destination, Error>,
}

#[test]
fn outbound_decisions() {
    let cases = [
        Case {
            name: "pod ip goes to the workload",
            dst: "198.19.2.10:9000",
            want: Ok(Destination::Workload {
                workload: "shop/s2".into(),
                addr: sa("198.19.2.10:9000"),
            }),
        },
        Case {
            name: "v4-mapped pod ip is canonicalised",
            dst: "[::ffff:198.19.2.10]:9000",
            want: Ok(Destination::Workload {
                workload: "shop/s2".into(),
                addr: sa("198.19.2.10:9000"),
            }),
        },
        Case {
            name: "unknown address passes through",
            dst: "198.51.100.7:443",
            want: Ok(Destination::Passthrough {
                addr: sa("198.51.100.7:443"),
            }),
        },
        Case {
            name: "vip v6 picks the only v6 endpoint and its target port",
            dst: "[2001:db8:100::1]:80",
            want: Ok(Destination::Service {
                service: "shop/server".into(),
                endpoint: sa("[2001:db8:1:1::10]:8080"),
            }),
        },
        Case {
            name: "vip on an unknown port",
            dst: "198.18.100.1:81",
            want: Err(Error::NoSuchServicePort {
                service: "shop/server".into(),
                port: 81,
            }),
        },
        Case {
            name: "service without endpoints",
            dst: "198.18.100.2:80",
            want: Err(Error::NoEndpoint {
                service: "shop/empty".into(),
                port: 80,
            }),
        },
    ];
    let st = state();
    for c in cases {
        assert_eq!(outbound(&st, sa(c.dst)), c.want, "{}", c.name);
    }
}

#[test]
fn vip_round_robins_over_endpoints() {
    let st = state();
    let picks: Vec<SocketAddr> = (0..4)
        .map(|_| {
            outbound(&st, sa("198.18.100.1:80"))
                .expect("routable")
                .addr()
        })
        .collect();
    assert_eq!(
        picks,
        vec![
            sa("198.19.1.10:8080"),
            sa("198.19.2.10:8080"),
            sa("198.19.1.10:8080"),
            sa("198.19.2.10:8080")
        ]
    );
}
