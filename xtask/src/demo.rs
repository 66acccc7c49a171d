//! `cargo xtask demo`: a 2-node lab, a captured connection shown step by step.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferrymesh_tests::Lab;

use crate::{bootstrap, bootstrap::step, build, lab::demo_spec};

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

pub fn run() -> Result<()> {
    bootstrap::ensure()?;
    build::all(false)?;

    step("creating the lab: 2 nodes joined by a bridge in a fabric namespace, one netns + cgroup per pod");
    let mut lab = Lab::new(demo_spec())?;
    for p in &lab.pods {
        let meshed = lab
            .spec
            .namespaces
            .iter()
            .any(|(ns, m)| *m && *ns == p.spec.namespace);
        println!(
            "    pod {}/{} on {}: {} / {} ({})",
            p.spec.namespace,
            p.spec.name,
            p.spec.node,
            p.ip4,
            p.ip6,
            if meshed {
                "namespace labelled ferrymesh.io/dataplane-mode=ambient"
            } else {
                "namespace not in the mesh"
            }
        );
    }
    let svc = lab.service("server").clone();
    println!(
        "    service shop/server: {}:80 and [{}]:80 -> pods app=server port 8080",
        svc.vip4, svc.vip6
    );

    step("starting one mesh-agent per node (eBPF: cgroup/connect4+6, sockops, sk_lookup)");
    lab.start_agents()?;
    for n in ["node-a", "node-b"] {
        let s = lab.stats(n)?;
        println!("    {n}: ready, enrolled {}", s["enrolled"]);
    }

    step("shop/server listens on 8080 (a plain echo server, it knows nothing of the mesh)");
    let mut server = lab.server("server", &[8080])?;

    let to = lab.pod("server").addr4(8080);
    step(&format!(
        "shop/client (node-a) sends 1 MiB to {to} and checks the echo"
    ));
    let r = lab.run_client(
        "client",
        &["connect", "--to", &to.to_string(), "--bytes", "1048576"],
    )?;
    ensure!(
        r["sent_sha256"] == r["received_sha256"],
        "echo differs: {r}"
    );
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
    show_counters(&lab, "node-a", "shop/client")?;
    show_counters(&lab, "node-b", "shop/server")?;

    // The access log line is written when the connection has closed on node-b.
    let mut hbone_lines: Vec<String> = Vec::new();
    for _ in 0..30 {
        hbone_lines = lab
            .agent_log("node-b")
            .lines()
            .filter(|l| l.contains(r#""transport":"hbone""#))
            .map(|l| {
                l.split_once("access: ")
                    .map(|(_, j)| j.to_owned())
                    .unwrap_or_else(|| l.to_owned())
            })
            .collect();
        if !hbone_lines.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "    the hop between the nodes was mutual TLS (HBONE, port 15008); node-b's access log:"
    );
    for l in hbone_lines.iter().take(1) {
        println!("      {l}");
    }

    step(&format!(
        "shop/client dials the service VIP {}:80",
        svc.vip4
    ));
    let r = lab.run_client(
        "client",
        &[
            "connect",
            "--to",
            &format!("{}:80", svc.vip4),
            "--bytes",
            "4096",
        ],
    )?;
    ensure!(
        r["sent_sha256"] == r["received_sha256"],
        "echo differs: {r}"
    );
    println!(
        "    server: {}",
        server.expect_line("accepted", Duration::from_secs(5))?
    );

    step("legacy/outsider (not in the mesh) dials the same server");
    let r = lab.run_client(
        "outsider",
        &["connect", "--to", &to.to_string(), "--bytes", "4096"],
    )?;
    ensure!(
        r["sent_sha256"] == r["received_sha256"],
        "echo differs: {r}"
    );
    println!(
        "    outsider's socket is connected to {} directly (not captured)",
        r["peer"].as_str().unwrap_or("?")
    );
    println!(
        "    server: {}  <- inbound still captured: the server's namespace is meshed",
        server.expect_line("accepted", Duration::from_secs(5))?
    );

    step("an AuthorizationPolicy lets only shop/client reach shop/server; legacy/outsider joins the mesh");
    lab.set_extra_config(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-client, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: server}}\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]\n---\n",
    )?;
    lab.set_meshed("legacy", true)?;
    lab.wait_stats("node-a", "legacy/outsider enrolled", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w == "legacy/outsider"))
    })?;
    let refused = lab
        .run_client(
            "outsider",
            &["connect", "--to", &to.to_string(), "--bytes", "4096"],
        )
        .is_err();
    ensure!(refused, "the policy should refuse legacy/outsider");
    let denial = lab
        .agent_log("node-b")
        .lines()
        .rev()
        .find(|l| l.contains("connection refused"))
        .map(str::to_owned)
        .unwrap_or_default();
    println!("    legacy/outsider, now meshed as spiffe://cluster.local/ns/legacy/sa/outsider, is refused:");
    println!(
        "      {}",
        denial
            .split_once("WARN ")
            .map(|(_, r)| r)
            .unwrap_or(&denial)
    );
    let r = lab.run_client(
        "client",
        &["connect", "--to", &to.to_string(), "--bytes", "4096"],
    )?;
    ensure!(
        r["sent_sha256"] == r["received_sha256"],
        "echo differs: {r}"
    );
    println!("    shop/client is still served");
    show_counters(&lab, "node-b", "shop/server")?;

    let rss: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|n| format!("{n} {} KiB", lab.agent_rss_kib(n).unwrap_or(0)))
        .collect();
    step(&format!(
        "agent memory (RSS, debug build; `cargo xtask bench` measures release): {}",
        rss.join(", ")
    ));

    step("stopping agents (SIGTERM) and removing the lab");
    for n in ["node-a", "node-b"] {
        let status = lab.stop_agent(n).context("stop agent")?;
        println!("    {n}: agent exited ({status}), programs detached");
    }
    drop(server);
    drop(lab);
    println!("done: namespaces, cgroups and eBPF attachments removed");
    Ok(())
}
