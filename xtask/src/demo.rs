//! `cargo xtask demo`: a 2-node lab, a captured connection shown step by step.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferrymesh_tests::{eventually, App, Lab};

use crate::{bootstrap, build, lab::demo_spec, sh::step};

fn show_counters(lab: &Lab, node: &str, workload: &str) -> Result<()> {
    let s = lab.stats(node)?;
    let w = &s["workloads"][workload];
    println!(
        "    agent on {node}, {workload}: outbound captured={} connected={}, inbound captured={} delivered={}",
        w["outbound_captured"].as_u64().unwrap_or(0),
        w["outbound_connected"].as_u64().unwrap_or(0),
        w["inbound_captured"].as_u64().unwrap_or(0),
        w["inbound_delivered"].as_u64().unwrap_or(0),
    );
    Ok(())
}

/// The reason of the last refused connection in an agent's log, in one line:
/// "no ALLOW policy matches (node-b's agent: source ..., port 8080)".
fn refusal(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("connection refused: "))?;
    let (_, rest) = line.split_once("connection refused: ")?;
    let (reason, fields) = rest.split_once(" source=").unwrap_or((rest, ""));
    let field = |k: &str| {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or("?")
            .to_owned()
    };
    let source = fields.split_whitespace().next().unwrap_or("?");
    Some(format!(
        "{reason} (destination {}, port {}, source {source})",
        field("destination="),
        field("port=")
    ))
}

const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-client, namespace: shop}\n\
     spec:\n  selector: {matchLabels: {app: server}}\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]\n---\n";

const L7: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [198.18.100.80]
  selector: {svc: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIPs: [198.18.100.81]
  selector: {version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIPs: [198.18.100.82]
  selector: {version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - name: canary
    backendRefs: [{name: web-v1, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-read-only, namespace: shop}
spec:
  selector: {matchLabels: {svc: web}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [GET, HEAD]}}]
"#;

/// The L7 waypoint: a canary split by weight and a per-request policy denial.
fn l7(lab: &mut Lab, l4_policy: &str) -> Result<()> {
    step("L7: Service shop/web (appProtocol http) gets an HTTPRoute, 90% to web-v1 and 10% to web-v2 (canary), and an AuthorizationPolicy that allows shop/client only GET/HEAD");
    let _servers = [
        lab.http_server("web-v1", "v1", &[])?,
        lab.http_server("web-v2", "v2", &[])?,
    ];
    lab.apply_config(&format!("{l4_policy}{L7}"))?;
    println!("    web-v1 on node-b and web-v2 on node-a run lab-http (HTTP/1.1 + HTTP/2, knows nothing of the mesh)");
    let r = lab
        .http_app(
            "client",
            &[
                "get",
                "--url",
                "http://198.18.100.80/",
                "--count",
                "1000",
                "--concurrency",
                "4",
            ],
        )?
        .json_result(Duration::from_secs(120))?;
    let v1 = r["servers"]["v1"].as_u64().unwrap_or(0);
    let v2 = r["servers"]["v2"].as_u64().unwrap_or(0);
    ensure!(v1 + v2 == 1000, "not all requests were served: {r}");
    println!("    1,000 GETs from shop/client to http://198.18.100.80/: web-v1 answered {v1}, web-v2 {v2} (p50 {} us, p99 {} us)", r["p50_us"], r["p99_us"]);
    let denied = lab
        .http_app(
            "client",
            &[
                "get",
                "--url",
                "http://198.18.100.80/orders/7",
                "--method",
                "DELETE",
            ],
        )?
        .json_result(Duration::from_secs(30))?;
    ensure!(
        denied["statuses"]["403"] == 1,
        "DELETE should be denied: {denied}"
    );
    println!(
        "    DELETE http://198.18.100.80/orders/7 from shop/client: 403, body {:?}",
        denied["last_body"]
    );
    let log = lab.agent_log("node-a");
    if let Some(line) = log.lines().rev().find(|l| l.contains("request denied")) {
        println!(
            "      {}",
            line.split_once("WARN ").map(|(_, r)| r).unwrap_or(line)
        );
    }
    if let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.contains("\"reporter\":\"waypoint\"") && l.contains("DELETE"))
    {
        println!(
            "    access log: {}",
            line.split_once("access: ").map(|(_, r)| r).unwrap_or(line)
        );
    }
    Ok(())
}

/// An echo through the mesh: sends `bytes` from `pod` to `to` and checks the echo.
fn echo(lab: &Lab, pod: &str, to: &str, bytes: &str) -> Result<serde_json::Value> {
    let r = lab.run_client(pod, &["connect", "--to", to, "--bytes", bytes])?;
    ensure!(
        r["sent_sha256"] == r["received_sha256"],
        "echo differs: {r}"
    );
    Ok(r)
}

fn show_lab(lab: &Lab) {
    for p in &lab.pods {
        let meshed = lab
            .spec
            .namespaces
            .iter()
            .any(|(ns, m)| *m && *ns == p.spec.namespace);
        let mode = if meshed {
            "namespace labelled ferrymesh.io/dataplane-mode=ambient"
        } else {
            "namespace not in the mesh"
        };
        let s = &p.spec;
        println!(
            "    pod {}/{} on {}: {} / {} ({mode})",
            s.namespace, s.name, s.node, p.ip4, p.ip6
        );
    }
    let svc = lab.service("server");
    println!(
        "    service shop/server: {}:80 and [{}]:80 -> pods app=server port 8080",
        svc.vip4, svc.vip6
    );
}

/// Pod to pod across nodes (HBONE), then through the Service VIP.
fn captured(lab: &Lab, server: &mut App) -> Result<()> {
    let to = lab.pod("server").addr4(8080).to_string();
    step(&format!(
        "shop/client (node-a) sends 1 MiB to {to} and checks the echo"
    ));
    let r = echo(lab, "client", &to, "1048576")?;
    let seen = server.expect_line("accepted", Duration::from_secs(5))?;
    println!(
        "    client's socket is connected to {} (the agent's outbound listener)",
        r["peer"].as_str().unwrap_or("?")
    );
    println!("    server: {seen}  <- delivered by the agent on node-b from 127.0.0.6");
    println!(
        "    sha256 both ways: {}",
        r["sent_sha256"].as_str().unwrap_or("?")
    );
    show_counters(lab, "node-a", "shop/client")?;
    show_counters(lab, "node-b", "shop/server")?;
    // The access log line is written when the connection has closed on node-b.
    let hbone_line = eventually(Duration::from_secs(10), "node-b's access log line", || {
        lab.agent_log("node-b")
            .lines()
            .find(|l| l.contains(r#""transport":"hbone""#))
            .map(|l| l.split_once("access: ").map_or(l, |(_, j)| j).to_owned())
            .ok_or("no HBONE access log line yet")
    })?;
    println!(
        "    the hop between the nodes was mutual TLS (HBONE, port 15008); node-b's access log:"
    );
    println!("      {hbone_line}");
    let vip = format!("{}:80", lab.service("server").vip4);
    step(&format!("shop/client dials the service VIP {vip}"));
    echo(lab, "client", &vip, "4096")?;
    println!(
        "    server: {}",
        server.expect_line("accepted", Duration::from_secs(5))?
    );
    Ok(())
}

/// A pod outside the mesh, then the same pod refused by an AuthorizationPolicy.
fn policy(lab: &mut Lab, server: &mut App) -> Result<()> {
    let to = lab.pod("server").addr4(8080).to_string();
    step("legacy/outsider (not in the mesh) dials the same server");
    let r = echo(lab, "outsider", &to, "4096")?;
    println!(
        "    outsider's socket is connected to {} directly (not captured)",
        r["peer"].as_str().unwrap_or("?")
    );
    println!(
        "    server: {}  <- inbound still captured: the server's namespace is meshed",
        server.expect_line("accepted", Duration::from_secs(5))?
    );
    step("an AuthorizationPolicy lets only shop/client reach shop/server; legacy/outsider joins the mesh");
    lab.set_extra_config(POLICY)?;
    lab.set_meshed("legacy", true)?;
    lab.wait_stats("node-a", "legacy/outsider enrolled", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w == "legacy/outsider"))
    })?;
    // Expected to fail: the client's own error is not shown, the agent's reason is.
    let refused = echo(lab, "outsider", &to, "4096");
    ensure!(
        refused.is_err(),
        "the policy should refuse legacy/outsider: {refused:?}"
    );
    let why = eventually(Duration::from_secs(10), "node-b to log the refusal", || {
        refusal(&lab.agent_log("node-b")).ok_or("no refusal in node-b's log yet")
    })?;
    println!("    legacy/outsider (now meshed as spiffe://cluster.local/ns/legacy/sa/outsider) -> {to}: refused by policy: {why}");
    echo(lab, "client", &to, "4096")?;
    println!("    shop/client is still served");
    show_counters(lab, "node-b", "shop/server")
}

fn steps(lab: &mut Lab) -> Result<()> {
    show_lab(lab);
    step("starting one mesh-agent per node (eBPF: cgroup/connect4+6, sockops, sk_lookup)");
    lab.start_agents()?;
    for n in ["node-a", "node-b"] {
        let s = lab.stats(n)?;
        println!("    {n}: ready, enrolled {}", s["enrolled"]);
    }
    step("shop/server listens on 8080 (a plain echo server, it knows nothing of the mesh)");
    let mut server = lab.server("server", &[8080])?;
    captured(lab, &mut server)?;
    policy(lab, &mut server)?;
    l7(lab, POLICY)?;
    let rss: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|n| format!("{n} {} KiB", lab.agent_rss_kib(n).unwrap_or(0)))
        .collect();
    step(&format!(
        "agent memory (RSS, debug build; `cargo xtask bench` measures release): {}",
        rss.join(", ")
    ));
    step("stopping agents (SIGTERM: capture stays pinned, pods fail closed) and removing the lab (its pins with it)");
    for n in ["node-a", "node-b"] {
        let status = lab.stop_agent(n).context("stop agent")?;
        println!("    {n}: agent exited ({status}); its pods stay captured (fail closed) until the lab is removed");
    }
    Ok(())
}

/// An unexpected failure: everything needed to debug it, before the lab goes.
fn report(lab: &Lab) {
    for n in ["node-a", "node-b"] {
        eprintln!("--- agent log {n} ---\n{}", lab.agent_log(n));
    }
    eprintln!("--- control plane log ---\n{}", lab.ca_log());
}

pub fn run() -> Result<()> {
    bootstrap::ensure()?;
    build::all(false)?;
    step("creating the lab: 2 nodes joined by a bridge in a fabric namespace, one netns + cgroup per pod");
    let mut lab = Lab::new(demo_spec())?;
    if let Err(e) = steps(&mut lab) {
        report(&lab);
        return Err(e);
    }
    drop(lab);
    println!("done: namespaces, cgroups and eBPF attachments removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_is_one_line_with_its_reason() {
        // A line as the agent writes it (tracing's fmt layer, no ANSI).
        let log = "2026-12-01T22:40:01.123Z  INFO mesh_agent::app: agent ready\n\
            2026-12-01T22:40:02.456Z  WARN mesh_agent::shared: connection refused: no ALLOW policy matches \
            source=spiffe://cluster.local/ns/legacy/sa/outsider destination=spiffe://cluster.local/ns/shop/sa/server port=8080\n";
        assert_eq!(
            super::refusal(log).as_deref(),
            Some("no ALLOW policy matches (destination spiffe://cluster.local/ns/shop/sa/server, port 8080, source spiffe://cluster.local/ns/legacy/sa/outsider)")
        );
        assert_eq!(super::refusal("nothing refused here\n"), None);
    }
}
