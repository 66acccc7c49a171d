//! The Gateway API's conformance tests (kubernetes-sigs/gateway-api,
//! conformance/tests), written afresh for the lab: one function per upstream
//! test, named after it, with upstream's manifests (namespaces, Services, routes)
//! and its requests and expectations, sent with curl and lab-http's gRPC client.
//! `gateway` holds the Gateway HTTP profile's tests (routes on the Gateway
//! `gateway-conformance-infra/same-namespace`, served by a standalone ferrymesh
//! gateway), `mesh` the Mesh profile's (GAMMA routes on Services, sent from
//! meshed pods). Route conditions are read with `meshctl routes`, as an operator
//! would outside Kubernetes. Every test runs, then the failures are listed by
//! upstream name.
mod conformance {
    pub mod gateway;
    pub mod gateway_core;
    pub mod mesh;
    pub mod mesh_core;
}

use std::{collections::BTreeMap, panic::AssertUnwindSafe, time::Duration};

use ferrymesh_tests::{App, Lab, LabSpec, PodSpec, Waypoint};
use serde_json::Value;

pub const INFRA: &str = "gateway-conformance-infra";
/// The gateway pod's HTTP listener.
pub const GATEWAY_PORT: u16 = 8000;

/// Upstream's base manifests: the backends of each namespace (ports as upstream:
/// 8080 for the infra and app backends, 80 for the mesh's echo), and an h2c port.
const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v1, namespace: gateway-conformance-infra}
spec:
  clusterIPs: [198.18.110.1]
  selector: {app: infra-backend-v1}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v2, namespace: gateway-conformance-infra}
spec:
  clusterIPs: [198.18.110.2]
  selector: {app: infra-backend-v2}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v3, namespace: gateway-conformance-infra}
spec:
  clusterIPs: [198.18.110.3]
  selector: {app: infra-backend-v3}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v1-h2c, namespace: gateway-conformance-infra}
spec:
  clusterIPs: [198.18.110.4]
  selector: {app: infra-backend-v1}
  ports: [{name: h2c, port: 8080, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Service
metadata: {name: app-backend-v1, namespace: gateway-conformance-app-backend}
spec:
  clusterIPs: [198.18.110.11]
  selector: {app: app-backend-v1}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: app-backend-v2, namespace: gateway-conformance-app-backend}
spec:
  clusterIPs: [198.18.110.12]
  selector: {app: app-backend-v2}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-backend, namespace: gateway-conformance-web-backend}
spec:
  clusterIPs: [198.18.110.21]
  selector: {app: web-backend}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: gateway-conformance-mesh}
spec:
  clusterIPs: [198.18.111.1]
  selector: {svc: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: gateway-conformance-mesh}
spec:
  clusterIPs: [198.18.111.2]
  selector: {app: echo-v1}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: gateway-conformance-mesh}
spec:
  clusterIPs: [198.18.111.3]
  selector: {app: echo-v2}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
"#;

/// The addresses of the mesh's Services.
pub const ECHO: &str = "198.18.111.1";
pub const ECHO_V1: &str = "198.18.111.2";

/// Backends (server pods named as upstream's), the clients and the gateway.
fn spec() -> LabSpec {
    let server = |name: &str, ns: &str, node: &str| PodSpec::new(name, ns, node);
    let mesh = "gateway-conformance-mesh";
    LabSpec {
        agent_args: vec![],
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![
            (INFRA.into(), true),
            ("gateway-conformance-app-backend".into(), true),
            ("gateway-conformance-web-backend".into(), true),
            (mesh.into(), true),
            ("gateway-conformance-mesh-consumer".into(), true),
            ("plain".into(), false),
        ],
        pods: vec![
            server("infra-backend-v1", INFRA, "b"),
            server("infra-backend-v2", INFRA, "a"),
            server("infra-backend-v3", INFRA, "b"),
            server("app-backend-v1", "gateway-conformance-app-backend", "a"),
            server("app-backend-v2", "gateway-conformance-app-backend", "b"),
            server("web-backend", "gateway-conformance-web-backend", "a"),
            server("echo-v1", mesh, "b").label("svc", "echo"),
            server("echo-v2", mesh, "a").label("svc", "echo"),
            PodSpec::new("mesh-client", mesh, "a"),
            PodSpec::new("consumer-client", "gateway-conformance-mesh-consumer", "a"),
            PodSpec::new("gateway", INFRA, "a").label("ferrymesh.io/dataplane-mode", "none"),
            PodSpec::new("outsider", "plain", "b"),
        ],
        services: vec![],
    }
}

const SERVERS: [&str; 8] = [
    "infra-backend-v1",
    "infra-backend-v2",
    "infra-backend-v3",
    "app-backend-v1",
    "app-backend-v2",
    "web-backend",
    "echo-v1",
    "echo-v2",
];

/// A request as upstream's tests describe one.
#[derive(Debug, Clone, Default)]
pub struct Req<'a> {
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
}

pub fn get<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    Req {
        host,
        method: "GET",
        path,
        headers: vec![],
    }
}

/// A response: status, headers (lower-case names, repeated ones joined with
/// ", ") and the echo server's JSON of the request it saw (Null when none).
#[derive(Debug)]
pub struct Resp {
    pub code: u16,
    pub headers: BTreeMap<String, String>,
    pub echo: Value,
}

impl Resp {
    /// The pod that answered.
    pub fn backend(&self) -> &str {
        self.echo["server"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    /// A header of the request as the backend saw it.
    pub fn seen_header(&self, name: &str) -> Option<&str> {
        self.echo["headers"][name].as_str()
    }
}

fn parse(text: &str) -> Resp {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let (body, code) = body.rsplit_once('\n').unwrap_or((body, "0"));
    let mut headers = BTreeMap::<String, String>::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().to_owned();
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|e| *e = format!("{e}, {v}"))
                .or_insert(v);
        }
    }
    Resp {
        code: code.trim().parse().unwrap_or(0),
        headers,
        echo: serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    }
}

pub struct Suite {
    pub lab: Lab,
    pub gateway: Waypoint,
    _servers: Vec<App>,
}

impl Suite {
    fn new() -> Suite {
        let mut lab = Lab::new(spec()).expect("lab");
        lab.use_control_plane();
        lab.set_extra_config(BASE).expect("config");
        lab.start_agents().expect("agents");
        let servers = SERVERS
            .iter()
            .map(|s| lab.http_server(s, s, &[]).expect("server"))
            .collect();
        let listen = format!("[::]:{GATEWAY_PORT}");
        let gateway = lab
            .start_waypoint(
                "gateway",
                &[
                    "--gateway",
                    &format!("{INFRA}/same-namespace"),
                    "--http",
                    &listen,
                ],
            )
            .expect("gateway");
        Suite {
            lab,
            gateway,
            _servers: servers,
        }
    }

    fn gateway_generation(&self) -> u64 {
        self.gateway
            .get("/stats")
            .ok()
            .and_then(|(_, t)| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["config"]["generation"].as_u64())
            .unwrap_or(0)
    }

    /// Replaces the test's manifests (the base stays) and waits until both agents
    /// and the gateway run them.
    pub fn apply(&mut self, manifests: &str) {
        let before = self.gateway_generation();
        self.lab
            .apply_config(&format!("{BASE}---\n{manifests}"))
            .expect("config applied by the agents");
        ferrymesh_tests::eventually(Duration::from_secs(20), "the gateway to reload", || {
            let now = self.gateway_generation();
            if now > before {
                Ok(())
            } else {
                Err(now)
            }
        })
        .expect("gateway reloaded");
    }

    fn curl(&self, pod: &str, url: &str, r: &Req<'_>) -> Resp {
        let host = format!("host: {}", r.host);
        let mut args = vec![
            "-s",
            "-i",
            "--http1.1",
            "--max-time",
            "15",
            "-w",
            "\n%{http_code}",
            "-X",
            r.method,
        ];
        if !r.host.is_empty() {
            args.extend(["-H", host.as_str()]);
        }
        let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        for h in &headers {
            args.extend(["-H", h.as_str()]);
        }
        args.push(url);
        let out = self.lab.run_in_pod(pod, "curl", &args).expect("curl");
        parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// A request to the gateway, from outside the mesh.
    pub fn gw(&self, r: &Req<'_>) -> Resp {
        let ip = self.lab.pod("gateway").ip4;
        self.curl(
            "outsider",
            &format!("http://{ip}:{GATEWAY_PORT}{}", r.path),
            r,
        )
    }

    /// A request from a meshed pod to a Service address (port 80).
    pub fn mesh(&self, from: &str, vip: &str, r: &Req<'_>) -> Resp {
        self.curl(from, &format!("http://{vip}{}", r.path), r)
    }

    /// (status, reason) of a route's condition at its first parent, as
    /// `meshctl routes` shows it.
    pub fn condition(&self, kind: &str, ns: &str, name: &str, cond: &str) -> (bool, String) {
        let out = self
            .lab
            .meshctl(self.lab.fabric_netns(), &["routes", "-o", "json"])
            .expect("meshctl routes");
        let v: Value = serde_json::from_str(&out).expect("json");
        let route = v["routes"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["kind"] == kind && r["namespace"] == ns && r["name"] == name)
            })
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name} in {v}"));
        let c = route["parents"][0]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == cond))
            .unwrap_or_else(|| panic!("no {cond} in {route}"));
        (
            c["status"] == true,
            c["reason"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Requests served by a backend pod so far, by path and query.
    pub fn seen(&self, pod: &str) -> Value {
        let out = self
            .lab
            .run_in_pod(
                pod,
                "curl",
                &["-s", "--max-time", "5", "http://127.0.0.1:8080/_stats"],
            )
            .expect("stats");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// lab-http's gRPC client from a pod (unary calls only): its JSON report.
    pub fn grpc(&self, from: &str, to: &str, count: u32, headers: &[&str]) -> Value {
        let count = count.to_string();
        let mut args = vec!["grpc-client", "--to", to, "--count", &count, "--unary-only"];
        for h in headers {
            args.extend(["--header", h]);
        }
        self.lab
            .http_app(from, &args)
            .expect("grpc client")
            .json_result(Duration::from_secs(120))
            .expect("grpc result")
    }
}

pub type Test = (&'static str, fn(&mut Suite));

#[test]
fn gateway_api_conformance() {
    let mut s = Suite::new();
    let tests: Vec<Test> = conformance::gateway::TESTS
        .iter()
        .chain(conformance::gateway_core::TESTS)
        .chain(conformance::mesh::TESTS)
        .chain(conformance::mesh_core::TESTS)
        .copied()
        .collect();
    let mut failed = Vec::new();
    for (name, test) in &tests {
        eprintln!("=== {name}");
        if std::panic::catch_unwind(AssertUnwindSafe(|| test(&mut s))).is_err() {
            failed.push(*name);
        }
    }
    eprintln!(
        "Gateway API conformance: {} of {} upstream tests pass",
        tests.len() - failed.len(),
        tests.len()
    );
    assert!(
        failed.is_empty(),
        "failed: {failed:?}\ngateway log:\n{}",
        s.gateway.log_text()
    );
}
