//! Istio-compatible telemetry, end to end: a real Prometheus (Debian's) in the
//! lab's fabric namespace scrapes both agents; after known traffic, PromQL with
//! the selectors and groupings of Istio's standard dashboards returns the series
//! and values the traffic made. (Dashboards take `irate(...[1m])` of these
//! counters; the test reads the counters themselves, whose values do not depend
//! on when Prometheus scraped.)
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

mod common;

use common::DENY_CLIENT;
use ferrymesh_tests::{eventually, netns, App, Lab, LabSpec, PodSpec};
use serde_json::Value;

/// `web` (VIP) splits 90/10 over `web-v1` (node b) and `web-v2` (node a) through
/// the waypoint; `server` (node b) takes plain TCP.
const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [198.18.100.50]
  selector: {svc: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIPs: [198.18.100.51]
  selector: {version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIPs: [198.18.100.52]
  selector: {version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web-v1, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
"#;

/// Prometheus, killed (and its data dropped) with the test.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    netns: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LISTEN: &str = "127.0.0.1:9090";

impl Prometheus {
    /// Starts Prometheus in the fabric namespace, scraping each node's agent
    /// (node n is 198.18.0.n; metrics on :15020) every second.
    fn start(lab: &Lab, nodes: usize) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("ferrymesh-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let targets: Vec<String> = (1..=nodes)
            .map(|n| format!("'198.18.0.{n}:15020'"))
            .collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: ferrymesh-agents\n  static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        let netns = PathBuf::from(format!("/run/netns/{}", lab.fabric_netns()));
        let log = std::fs::File::create(dir.join("log")).expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["--", "prometheus"])
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={LISTEN}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (installed by cargo xtask)");
        let p = Prometheus { child, dir, netns };
        eventually(
            Duration::from_secs(60),
            "Prometheus ready",
            || match netns::http_get(&p.netns, LISTEN.parse().unwrap(), "/-/ready") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// An instant query: each series' labels named in `by` and its value.
    fn query(&self, promql: &str, by: &str) -> Result<BTreeMap<String, f64>, String> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = netns::http_get(&self.netns, LISTEN.parse().unwrap(), &path)
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(body);
        }
        let mut out = BTreeMap::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let key = r["metric"][by].as_str().unwrap_or("").to_owned();
            let value = r["value"][1].as_str().and_then(|s| s.parse().ok());
            out.insert(key, value.unwrap_or(f64::NAN));
        }
        Ok(out)
    }

    /// Waits until `promql` grouped `by` returns exactly `want`.
    fn expect(&self, promql: &str, by: &str, want: &BTreeMap<String, f64>) {
        eventually(Duration::from_secs(30), promql, || {
            let got = self.query(promql, by)?;
            (got == *want)
                .then_some(())
                .ok_or(format!("{got:?}, want {want:?}"))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()));
    }

    /// What Prometheus has, for a failed expectation.
    fn diagnose(&self) -> String {
        let path = format!(
            "/api/v1/query?query={}",
            encode(r#"{__name__=~"up|istio_.*_total"}"#)
        );
        let body = netns::http_get(&self.netns, LISTEN.parse().unwrap(), &path)
            .map(|(_, b)| b)
            .unwrap_or_else(|e| e.to_string());
        format!("Prometheus has: {body}\nits log:\n{}", self.log())
    }
}

/// Every query of the dashboards under deploy/dashboards (panel targets, and the
/// variables' `label_values(metric, label)` as `count by (label) (metric)`), with
/// the variables set as a user picking "All" would: (dashboard, title, PromQL).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboards");
    let fill = |q: &str| {
        q.replace("$__rate_interval", "1m")
            .replace("$namespace", "shop")
            .replace("$workload", ".*")
            .replace("$instance", ".*")
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/dashboards") {
        let path = entry.expect("entry").path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = d["title"].as_str().unwrap_or("?").to_owned();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("a PromQL target");
                let title = p["title"].as_str().unwrap_or("?").to_owned();
                out.push((name.clone(), title, fill(expr)));
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let Some(q) = v["query"]["query"].as_str() else {
                continue;
            };
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable query {q}"));
            let (metric, label) = (inner.0.trim(), inner.1.trim());
            let title = format!("variable {}", v["name"]);
            out.push((
                name.clone(),
                title,
                fill(&format!("count by ({label}) ({metric})")),
            ));
        }
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn lab() -> (Lab, Vec<App>) {
    lab_with(&[])
}

fn lab_with(agent_args: &[&str]) -> (Lab, Vec<App>) {
    let spec = LabSpec {
        agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("shop".into(), true)],
        pods: vec![
            PodSpec::new("client", "shop", "a").label("app", "client"),
            PodSpec::new("web-v1", "shop", "b")
                .label("svc", "web")
                .label("app", "web")
                .label("version", "v1"),
            PodSpec::new("web-v2", "shop", "a")
                .label("svc", "web")
                .label("app", "web")
                .label("version", "v2"),
            PodSpec::new("server", "shop", "b").label("app", "server"),
        ],
        services: vec![],
    };
    let mut lab = Lab::new(spec).expect("lab");
    lab.set_extra_config(CONFIG).expect("config");
    lab.start_agents().expect("agents");
    let apps = vec![
        lab.http_server("web-v1", "v1", &[]).expect("web-v1"),
        lab.http_server("web-v2", "v2", &[]).expect("web-v2"),
        lab.server("server", &[7000]).expect("server"),
    ];
    (lab, apps)
}

fn map(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
    kv.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn istio_dashboard_queries_return_the_traffic_sent() {
    let (lab, _apps) = lab();
    let prom = Prometheus::start(&lab, 2);

    // 100 requests through the waypoint's 90/10 split; the servers say who got how many.
    let r = lab
        .http_app(
            "client",
            &[
                "get",
                "--url",
                "http://198.18.100.50/split",
                "--count",
                "100",
            ],
        )
        .expect("lab-http get")
        .json_result(Duration::from_secs(120))
        .expect("get result");
    assert_eq!(r["statuses"]["200"], 100, "{r}");
    let v1 = r["servers"]["v1"].as_f64().unwrap_or(0.0);
    let v2 = r["servers"]["v2"].as_f64().unwrap_or(0.0);
    assert_eq!(v1 + v2, 100.0, "{r}");

    // Istio Service dashboard, "Incoming Requests By Source And Response Code",
    // and Kiali's version graph: requests per destination version.
    prom.expect(
        r#"sum(istio_requests_total{reporter="waypoint", source_workload="client", source_workload_namespace="shop", destination_service_namespace="shop", request_protocol="http", response_code="200"}) by (destination_version)"#,
        "destination_version",
        &map(&[("v1", v1), ("v2", v2)]).into_iter().filter(|(_, n)| *n > 0.0).collect(),
    );
    prom.expect(
        r#"sum(istio_requests_total{reporter="waypoint", connection_security_policy="mutual_tls", destination_workload_namespace="shop"}) by (destination_service)"#,
        "destination_service",
        &map(&[
            ("web-v1.shop.svc.cluster.local", v1),
            ("web-v2.shop.svc.cluster.local", v2),
        ])
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .collect(),
    );
    // Request duration histogram: one observation per request.
    prom.expect(
        r#"sum(istio_request_duration_milliseconds_count{reporter="waypoint", source_canonical_service="client"}) by (source_canonical_service)"#,
        "source_canonical_service",
        &map(&[("client", 100.0)]),
    );

    // Plain TCP: 3 connections of 65,536 bytes echoed, client (a) -> server (b).
    let to = format!("{}:7000", lab.pod("server").ip4);
    for _ in 0..3 {
        lab.run_client("client", &["connect", "--to", &to, "--bytes", "65536"])
            .expect("tcp client");
    }
    // Istio Workload dashboard, "Bytes Received from Incoming TCP Connection"
    // (reporter destination, mTLS), grouped by the caller's principal.
    let tcp = |metric: &str| {
        format!(
            r#"sum({metric}{{reporter="destination", connection_security_policy="mutual_tls", destination_workload_namespace="shop", destination_workload="server"}}) by (source_principal)"#
        )
    };
    let client = "spiffe://cluster.local/ns/shop/sa/client";
    prom.expect(
        &tcp("istio_tcp_sent_bytes_total"),
        "source_principal",
        &map(&[(client, 3.0 * 65536.0)]),
    );
    prom.expect(
        &tcp("istio_tcp_received_bytes_total"),
        "source_principal",
        &map(&[(client, 3.0 * 65536.0)]),
    );
    prom.expect(
        &tcp("istio_tcp_connections_closed_total"),
        "source_principal",
        &map(&[(client, 3.0)]),
    );
    // Every dashboard panel's query runs and returns series for this traffic.
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} queries", queries.len());
    for (dashboard, title, q) in queries {
        eventually(
            Duration::from_secs(30),
            &format!("{dashboard}: {title}"),
            || match prom.query(&q, "") {
                Ok(r) if !r.is_empty() => Ok(()),
                Ok(_) => Err(format!("no series for {q}")),
                Err(e) => Err(format!("{q}: {e}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.diagnose()));
    }

    // The source's node reports the same connections (Kiali's TCP edges).
    prom.expect(
        r#"sum(istio_tcp_connections_opened_total{reporter="source", source_workload="client", destination_workload="server"}) by (destination_canonical_service)"#,
        "destination_canonical_service",
        &map(&[("server", 3.0)]),
    );
}

/// meshctl run in `node`'s network namespace (where its agent's admin API is).
fn meshctl(lab: &Lab, node: &str, args: &[&str]) -> String {
    lab.meshctl(&lab.netns_name(node), args).expect("meshctl")
}

#[test]
fn meshctl_denials_and_node_views_say_what_an_agent_refused_and_holds() {
    let (mut lab, _apps) = lab();
    lab.apply_config(&format!("{CONFIG}{DENY_CLIENT}"))
        .expect("policy");
    let to = format!("{}:7000", lab.pod("server").ip4);
    let refused = lab.run_client("client", &["connect", "--to", &to, "--bytes", "1024"]);
    assert!(
        refused.as_ref().map_or(true, |r| r["received"] != 1024),
        "a denied connection was served: {refused:?}"
    );
    let denials = eventually(
        Duration::from_secs(10),
        "the refusal kept by agent b",
        || {
            let out = meshctl(
                &lab,
                "b",
                &["denials", "--pod", "shop/server", "-o", "json"],
            );
            let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
            (v.as_array().is_some_and(|a| !a.is_empty()))
                .then_some(v)
                .ok_or("none yet".to_owned())
        },
    )
    .expect("denials");
    let d = &denials[0];
    assert_eq!(d["layer"], "l4", "{d}");
    assert_eq!(
        d["source"], "spiffe://cluster.local/ns/shop/sa/client",
        "{d}"
    );
    assert_eq!(d["destination"], "shop/server", "{d}");
    assert_eq!(d["target"], to.as_str(), "{d}");
    assert!(
        d["policy"]
            .as_str()
            .is_some_and(|p| p.contains("deny-client")),
        "{d}"
    );
    // The table says the same for people; another pod's filter shows none of it.
    let table = meshctl(&lab, "b", &["denials"]);
    assert!(
        table.contains("deny-client") && table.contains("shop/server"),
        "{table}"
    );
    let other = meshctl(&lab, "b", &["denials", "--pod", "shop/web-v1"]);
    assert!(other.contains("no refusals kept"), "{other}");
    // A well-behaved client on another pod is still served meanwhile.
    let r = lab
        .http_app(
            "client",
            &["get", "--url", "http://198.18.100.50/ok", "--count", "5"],
        )
        .expect("lab-http get")
        .json_result(Duration::from_secs(60))
        .expect("get result");
    assert_eq!(r["statuses"]["200"], 5, "{r}");
    node_views_show_what_agent_a_holds(&lab);
    explain_agrees_with_what_happened(&lab, &to);
}

/// `meshctl explain` (run against the client's agent) says what the data path did.
fn explain_agrees_with_what_happened(lab: &Lab, denied_target: &str) {
    let explain = |target: &str| -> Value {
        let out = meshctl(lab, "a", &["explain", "shop/client", target, "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let e = explain(denied_target);
    assert_eq!(e["verdict"], "deny", "{e}");
    assert!(
        e["plan"].as_str().is_some_and(|p| p.starts_with("HBONE")),
        "{e}"
    );
    assert_eq!(e["destination"], "shop/server", "{e}");
    let matched: Vec<&Value> = e["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["matches"] == true)
        .collect();
    assert_eq!(matched.len(), 1, "{e}");
    assert_eq!(matched[0]["policy"], "shop/deny-client", "{e}");
    // web's VIP: the waypoint serves it, and the real requests above were served.
    let e = explain("198.18.100.50:80");
    assert_eq!(e["verdict"], "allow", "{e}");
    assert!(
        e["plan"].as_str().is_some_and(|p| p.contains("waypoint")),
        "{e}"
    );
    // An HTTP request there: the route and the backends the waypoint's own route
    // phase picks (the 90/10 split the counts above came from).
    let out = meshctl(
        lab,
        "a",
        &[
            "explain",
            "shop/client",
            "198.18.100.50:80",
            "--http",
            "GET",
            "/split",
            "-o",
            "json",
        ],
    );
    let e: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = &e["request"];
    assert!(
        r["route"]
            .as_str()
            .is_some_and(|x| x.contains("HTTPRoute shop/web")),
        "{e}"
    );
    assert_eq!(r["backends"][0], "shop/web-v1:80 weight 90", "{e}");
    assert_eq!(r["backends"][1], "shop/web-v2:80 weight 10", "{e}");
    // The table for people names the policy and the verdict.
    let text = meshctl(lab, "a", &["explain", "shop/client", denied_target]);
    assert!(
        text.contains("shop/deny-client") && text.contains("verdict:  deny"),
        "{text}"
    );
    // A pod the agent does not know is an error that says so.
    let out = lab.meshctl(
        &lab.netns_name("a"),
        &["explain", "shop/nobody", denied_target],
    );
    let err = format!("{out:?}");
    assert!(
        out.is_err() && err.contains("no workload shop/nobody"),
        "{err}"
    );
}

/// `meshctl agent <view>` (ztunnel-config's views) against node a's agent.
fn node_views_show_what_agent_a_holds(lab: &Lab) {
    let view = |name: &str| -> Value {
        let out = meshctl(lab, "a", &["agent", name, "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"))
    };
    let find = |v: &Value, key: &str, want: &str| -> Value {
        v.as_array()
            .into_iter()
            .flatten()
            .find(|r| r[key] == want)
            .cloned()
            .unwrap_or_else(|| panic!("no {key}={want} in {v}"))
    };
    let client = find(&view("workloads"), "workload", "shop/client");
    assert_eq!(
        client["identity"],
        "spiffe://cluster.local/ns/shop/sa/client"
    );
    assert_eq!(client["protocol"], "HBONE");
    assert_eq!(client["addresses"][0], lab.pod("client").ip4.to_string());
    let web = find(&view("services"), "service", "shop/web");
    assert_eq!(web["vips"][0], "198.18.100.50", "{web}");
    let policy = find(&view("policies"), "policy", "shop/deny-client");
    assert_eq!(policy["action"], "DENY", "{policy}");
    let cert = find(
        &view("certificates"),
        "identity",
        "spiffe://cluster.local/ns/shop/sa/client",
    );
    assert!(
        cert["serial"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()))
            && cert["expires_in_s"].as_i64().is_some_and(|s| s > 0),
        "{cert}"
    );
    // Its only L4 connection was refused and HTTP went through the waypoint: a
    // row with nothing open.
    let conns = find(&view("connections"), "pod", "shop/client");
    assert!(
        conns["active"] == 0 && conns["bytes_sent"].is_u64(),
        "{conns}"
    );
    let table = meshctl(lab, "a", &["agent", "certificates"]);
    assert!(
        table.contains("SERIAL") && table.contains("sa/client"),
        "{table}"
    );
}

#[test]
fn the_access_log_takes_the_operators_fields_and_text_format() {
    let fields = "reporter,src.identity,dst.identity,bytes_sent,result";
    let (lab, _apps) = lab_with(&["--access-log-format", "text", "--access-log-fields", fields]);
    let to = format!("{}:7000", lab.pod("server").ip4);
    lab.run_client("client", &["connect", "--to", &to, "--bytes", "4096"])
        .expect("tcp client");
    let want = "reporter=inbound src.identity=spiffe://cluster.local/ns/shop/sa/client \
                dst.identity=spiffe://cluster.local/ns/shop/sa/server bytes_sent=4096 result=ok";
    eventually(
        Duration::from_secs(10),
        "the text access-log line on b",
        || {
            let log = lab.agent_log("b");
            log.lines()
                .find(|l| l.trim_end().ends_with(want))
                .map(|_| ())
                .ok_or(log)
        },
    )
    .expect("access line");
    // A field the agent does not write is refused at start, naming the ones it does.
    let out = std::process::Command::new(ferrymesh_tests::lab::agent_binary().expect("bin"))
        .args([
            "run",
            "--node",
            "x",
            "--config",
            "/dev/null",
            "--access-log-fields",
            "reporter,client_ip",
        ])
        .output()
        .expect("mesh-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"client_ip\"") && err.contains("src.addr"),
        "{err}"
    );
}
