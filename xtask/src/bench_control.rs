//! `cargo xtask bench` control-plane part: how fast config reaches the node agents.
//! A 2-node lab whose agents take config from `mesh-agent control`; the config
//! directory grows to 1,000 Services and 5,000 pods (on 50 other nodes), then one
//! Service changes, then the control plane restarts and every agent gets a full
//! snapshot again. Times are from the file write (or the restart) until every agent
//! reports the new config applied (polled every 50 ms).
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Result;
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::bootstrap::step;

const NODES: [&str; 2] = ["a", "b"];

fn spec() -> LabSpec {
    LabSpec {
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        namespaces: vec![("bench".into(), true)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("server", "bench", "b"),
        ],
        services: vec![],
        agent_args: vec![],
        local_ca: false,
    }
}

/// 1,000 Services and 5,000 Workloads in namespace `scale` (not meshed), on nodes
/// far-0..far-49 that have no agent here; `marker` changes one Service's label.
fn scale_config(services: usize, pods: usize, marker: &str) -> String {
    let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: scale}\n---\n");
    for i in 0..pods {
        let _ = write!(
            y,
            "apiVersion: ferrymesh.io/v1alpha1\nkind: Workload\nmetadata: {{name: pod-{i}, namespace: scale, labels: {{app: svc-{}}}}}\nspec: {{node: far-{}, addresses: [100.64.{}.{}]}}\n---\n",
            i % services,
            i % 50,
            i / 250,
            i % 250 + 1
        );
    }
    for i in 0..services {
        let label = if i == 0 { marker } else { "v1" };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: scale, labels: {{rev: {label}}}}}\nspec: {{clusterIPs: [198.51.{}.{}], selector: {{app: svc-{i}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n",
            i / 250,
            i % 250 + 1
        );
    }
    y
}

fn generations(lab: &Lab) -> Result<Vec<u64>> {
    NODES
        .iter()
        .map(|n| Ok(lab.stats(n)?["config"]["generation"].as_u64().unwrap_or(0)))
        .collect()
}

/// Milliseconds until every agent's config generation passed `before`.
fn converge(lab: &Lab, before: &[u64], start: Instant) -> Result<f64> {
    for (n, g) in NODES.iter().zip(before) {
        lab.wait_stats_for(n, "the new config", Duration::from_secs(120), |s| {
            s["config"]["generation"].as_u64() > Some(*g)
        })?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub fn run() -> Result<Value> {
    step("control-plane bench: 2 agents on `mesh-agent control`; 1,000 Services and 5,000 pods (on 50 other nodes) added, one Service changed, then the control plane restarted");
    let mut lab = Lab::new(spec())?;
    lab.use_control_plane();
    lab.start_agents()?;
    let (services, pods) = (1000, 5000);

    let before = generations(&lab)?;
    let start = Instant::now();
    lab.set_extra_config(&scale_config(services, pods, "v1"))?;
    let grow_ms = converge(&lab, &before, start)?;

    let before = generations(&lab)?;
    let start = Instant::now();
    lab.set_extra_config(&scale_config(services, pods, "v2"))?;
    let change_ms = converge(&lab, &before, start)?;

    lab.kill_control_plane()?;
    std::thread::sleep(Duration::from_millis(500));
    let before = generations(&lab)?;
    let start = Instant::now();
    lab.start_control_plane()?;
    let resync_ms = converge(&lab, &before, start)?;
    let rss: Vec<u64> = NODES.iter().filter_map(|n| lab.agent_rss_kib(n)).collect();
    let dump = lab
        .admin("a", "/config_dump")
        .map(|(_, d)| d.len())
        .unwrap_or(0);
    drop(lab);

    println!();
    println!("config distribution, {services} Services + {pods} pods, 2 agents:");
    println!(
        "  grow from a few objects to all of them: {grow_ms:.0} ms until every agent applied it"
    );
    println!(
        "  one Service label changed:               {change_ms:.0} ms until every agent applied it"
    );
    println!("  control plane restarted (full snapshot):  {resync_ms:.0} ms until every agent applied it (includes reconnect backoff)");
    println!(
        "  agent RSS with this config: {rss:?} KiB; config dump on a: {} KiB",
        dump / 1024
    );
    Ok(json!({
        "services": services, "pods": pods, "agents": NODES.len(),
        "grow_ms": grow_ms, "one_change_ms": change_ms, "resync_after_restart_ms": resync_ms,
        "agent_rss_kib": rss, "config_dump_bytes_node_a": dump,
    }))
}
