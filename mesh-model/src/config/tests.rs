use super::*;

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    ferrymesh.io/dataplane-mode: ambient
---
apiVersion: ferrymesh.io/v1alpha1
kind: Workload
metadata:
  name: client
  namespace: shop
  labels: {app: client}
spec:
  node: node-a
  serviceAccount: client
  addresses: [198.19.1.2, "2001:db8:1:1::2"]
  netns: /run/netns/x
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: shop}
spec:
  clusterIPs: [198.18.100.1]
  selector: {app: server}
  ports:
  - {port: 80, targetPort: 8080}
"#;

#[test]
fn parses_a_good_file() {
    let o = parse("c.yaml", GOOD).expect("good file");
    assert_eq!(o.namespaces.len(), 1);
    assert_eq!(o.workloads[0].spec.service_account, "client");
    assert_eq!(o.services[0].spec.ports[0].target_port, Some(8080));
}

struct Case {
    name: &'static str,
    text: String,
    expect: &'static [&'static str],
}

#[test]
fn bad_files_name_the_place() {
    let cases = [
        Case {
            name: "bad ip names line and field",
            text: GOOD.replace("198.19.1.2", "198.19.1.999"),
            expect: &["c.yaml:18:", "spec.addresses[0]", "Workload"],
        },
        Case {
            name: "typo in a field",
            text: GOOD.replace("serviceAccount", "serviceAcount"),
            expect: &["c.yaml:17:", "unknown field `serviceAcount`"],
        },
        Case {
            name: "unknown kind",
            text: GOOD.replace("kind: Service", "kind: Servise"),
            expect: &["line 21", "unknown kind \"Servise\""],
        },
        Case {
            name: "port out of range",
            text: GOOD.replace("port: 80,", "port: 70000,"),
            expect: &["c.yaml:28:", "spec.ports[0].port"],
        },
        Case {
            name: "duplicate address",
            text: GOOD.replace("198.18.100.1", "198.19.1.2"),
            expect: &["Service \"shop/server\"", "already used"],
        },
        Case {
            name: "yaml syntax",
            text: GOOD.replace("labels: {app: client}", "labels: {app: client"),
            expect: &["c.yaml:"],
        },
    ];
    for case in cases {
        let err = parse("c.yaml", &case.text)
            .expect_err(case.name)
            .to_string();
        for want in case.expect {
            assert!(err.contains(want), "{}: {err:?} lacks {want:?}", case.name);
        }
    }
}
