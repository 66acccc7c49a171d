//! `cargo xtask bench` control-plane part: how fast config reaches the node agents.
//! A 2-node lab whose agents take config from `mesh-control`; the config directory
//! grows to 1,000 Services and 5,000 pods (on 50 other nodes), then one Service
//! changes (several rounds), then the control plane restarts and every agent gets a
//! full snapshot again. Times come from timestamps, not polling: the file write (or
//! the restart), the control plane's "seen" time of the version, and each agent's
//! "applied" time.
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Result;
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::{bench_util::median, sh::step};

const NODES: [&str; 2] = ["a", "b"];
/// Rounds of "one Service changed".
const CHANGES: usize = 5;

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

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The latest time an agent applied its config (Unix ms).
fn applied_ms(lab: &Lab) -> Result<u64> {
    let mut latest = 0;
    for n in NODES {
        latest = latest.max(
            lab.stats(n)?["config"]["applied_unix_ms"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    Ok(latest)
}

/// One Service changed: (ms from the write, ms from the control plane seeing it)
/// until both agents applied it.
fn one_change(lab: &mut Lab, services: usize, pods: usize, marker: &str) -> Result<(f64, f64)> {
    let before = generations(lab)?;
    let written = unix_ms();
    lab.set_extra_config(&scale_config(services, pods, marker))?;
    converge(lab, &before, Instant::now())?;
    let applied = applied_ms(lab)?;
    let seen = lab.control_status()?["seen_unix_ms"]
        .as_u64()
        .unwrap_or(written);
    Ok((
        applied.saturating_sub(written) as f64,
        applied.saturating_sub(seen) as f64,
    ))
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
    step("control-plane bench: 2 agents on `mesh-control`; 1,000 Services and 5,000 pods (on 50 other nodes) added, one Service changed (5 times), then the control plane restarted");
    let mut lab = Lab::new(spec())?;
    lab.use_control_plane();
    lab.start_agents()?;
    let (services, pods) = (1000, 5000);

    let rss_before: Vec<u64> = NODES.iter().filter_map(|n| lab.agent_rss_kib(n)).collect();
    let before = generations(&lab)?;
    let start = Instant::now();
    lab.set_extra_config(&scale_config(services, pods, "v1"))?;
    let grow_ms = converge(&lab, &before, start)?;

    let mut from_write = Vec::new();
    let mut from_seen = Vec::new();
    for round in 0..CHANGES {
        let (w, s) = one_change(&mut lab, services, pods, &format!("v{}", round + 2))?;
        from_write.push(w);
        from_seen.push(s);
    }
    let (change_ms, seen_ms) = (median(from_write.clone()), median(from_seen.clone()));

    lab.kill_control_plane()?;
    let before = generations(&lab)?;
    let start = Instant::now();
    lab.start_control_plane()?;
    let resync_ms = converge(&lab, &before, start)?;
    let rss: Vec<u64> = NODES.iter().filter_map(|n| lab.agent_rss_kib(n)).collect();
    let heap: Vec<Value> = NODES
        .iter()
        .map(|n| lab.stats(n).map(|s| s["heap"].clone()).unwrap_or_default())
        .collect();
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
        "  one Service label changed (median of {CHANGES}): {change_ms:.0} ms from the file write, {seen_ms:.0} ms from the control plane seeing it, until both agents applied it"
    );
    println!("  control plane restarted (full snapshot):  {resync_ms:.0} ms until every agent applied it (includes reconnect backoff)");
    println!(
        "  agent RSS with this config: {rss:?} KiB (before it: {rss_before:?} KiB); config dump on a: {} KiB",
        dump / 1024
    );
    println!("  agent heap (bytes): {}", Value::from(heap.clone()));
    Ok(json!({
        "services": services, "pods": pods, "agents": NODES.len(),
        "grow_ms": grow_ms, "one_change_ms": change_ms, "one_change_ms_from_seen": seen_ms,
        "one_change_rounds_from_write_ms": from_write, "one_change_rounds_from_seen_ms": from_seen,
        "resync_after_restart_ms": resync_ms,
        "agent_rss_kib": rss, "agent_rss_kib_before_scale_config": rss_before, "agent_heap": heap,
        "config_dump_bytes_node_a": dump,
    }))
}
