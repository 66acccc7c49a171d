//! The scale check: as many idle captured connections as the lab can hold,
//! cross-node over mTLS, with both agents' RSS and open files, the growth per
//! connection, and the RSS that growth projects at 100,000 connections against the
//! chart's memory limit. The lab's processes may hold at most `RLIMIT_NOFILE`
//! descriptors (this machine's hard limit), and every captured connection costs
//! each agent one: the count stays under that.
use std::time::Duration;

use anyhow::Result;
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::{
    bench_util::{met, set_meshed},
    sh::step,
};

/// The chart's memory limit for the agent (deploy/chart/ferrymesh/values.yaml).
const CHART_LIMIT_MIB: u64 = 512;
/// Idle ports on the server: one client address reaches one port through at most
/// the ephemeral range (~28,000), so the connections are spread over four.
const PORTS: [u16; 4] = [7000, 7001, 7002, 7003];

fn spec() -> LabSpec {
    LabSpec {
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("bench".into(), false)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("remote", "bench", "b"),
        ],
        services: vec![],
        // Above the default caps (a third of the open-file limit): the check is
        // how far memory goes, not where the caps bite.
        agent_args: vec!["--max-connections".into(), "100000".into()],
        local_ca: false,
    }
}

/// The hard open-file limit: the most any lab process (the agents raise their soft
/// limit to it) can hold.
fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, hard)| hard)
}

fn fds(lab: &Lab, node: &str) -> u64 {
    lab.agent_pid(node)
        .and_then(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map_or(0, |d| d.count() as u64)
}

/// How many connections to hold: 100,000, or what the descriptor limit leaves.
pub fn target_connections(nofile: u64, quick: bool) -> u64 {
    let most = nofile.saturating_sub(nofile / 10 + 500);
    let want = if quick { 4_000 } else { 100_000 };
    want.min(most)
}

pub fn run(quick: bool) -> Result<Value> {
    let nofile = open_file_limit();
    let conns = target_connections(nofile, quick);
    step(&format!(
        "scale: {conns} idle captured connections, cross-node over mTLS (open-file limit here {nofile}; 100,000 wanted)"
    ));
    let mut lab = Lab::new(spec())?;
    lab.start_agents()?;
    let ports: Vec<String> = PORTS.iter().map(u16::to_string).collect();
    let mut server = lab.app("remote", &["serve", "--idle", &ports.join(",")])?;
    server.expect_line("listening", Duration::from_secs(30))?;
    set_meshed(&mut lab, true)?;
    // Settling, not synchronisation: enrolment's transient allocations go back.
    std::thread::sleep(Duration::from_millis(500));
    let idle = [lab.agent_rss_kib("a"), lab.agent_rss_kib("b")];
    let idle_fds = [fds(&lab, "a"), fds(&lab, "b")];
    let per_port = conns / PORTS.len() as u64;
    let mut holders = Vec::new();
    for p in PORTS {
        let to = format!("{}:{p}", lab.pod("remote").ip4);
        let mut h = lab.app(
            "client",
            &["hold-many", "--to", &to, "--conns", &per_port.to_string()],
        )?;
        h.expect_line("open", Duration::from_secs(600))?;
        holders.push(h);
    }
    let total = per_port * PORTS.len() as u64;
    lab.wait_stats_for(
        "b",
        "every connection delivered",
        Duration::from_secs(300),
        |s| s["workloads"]["bench/remote"]["inbound_delivered"].as_u64() >= Some(total),
    )?;
    // Settling: the last handshakes' buffers are freed before RSS is read.
    std::thread::sleep(Duration::from_secs(1));
    let loaded = [lab.agent_rss_kib("a"), lab.agent_rss_kib("b")];
    let loaded_fds = [fds(&lab, "a"), fds(&lab, "b")];
    let pool = lab.stats("a")?["hbone"]["pool"].clone();
    drop(holders);
    Ok(report(
        total, nofile, idle, loaded, idle_fds, loaded_fds, pool,
    ))
}

fn report(
    conns: u64,
    nofile: u64,
    idle: [Option<u64>; 2],
    loaded: [Option<u64>; 2],
    idle_fds: [u64; 2],
    loaded_fds: [u64; 2],
    pool: Value,
) -> Value {
    let mut nodes = Vec::new();
    for (i, node) in ["a (client side)", "b (server side)"].iter().enumerate() {
        let (Some(i_kib), Some(l_kib)) = (idle[i], loaded[i]) else {
            continue;
        };
        let per_conn = (l_kib.saturating_sub(i_kib) * 1024) as f64 / conns.max(1) as f64;
        let projected_mib = (i_kib as f64 * 1024.0 + per_conn * 100_000.0) / (1 << 20) as f64;
        let fits = projected_mib <= CHART_LIMIT_MIB as f64;
        println!(
            "scale {node}: RSS {i_kib} -> {l_kib} KiB with {conns} connections ({per_conn:.0} B each); open files {} -> {}; at 100,000: {projected_mib:.0} MiB (chart limit {CHART_LIMIT_MIB} MiB {})",
            idle_fds[i],
            loaded_fds[i],
            met(fits)
        );
        nodes.push(json!({
            "node": node, "idle_rss_kib": i_kib, "loaded_rss_kib": l_kib,
            "bytes_per_connection": per_conn, "open_files": [idle_fds[i], loaded_fds[i]],
            "projected_rss_mib_at_100k": projected_mib, "chart_limit_mib": CHART_LIMIT_MIB,
            "fits_chart_limit": fits,
        }));
    }
    println!("scale: HBONE pool on node a: {pool}");
    json!({"connections": conns, "open_file_limit": nofile, "nodes": nodes, "pool": pool})
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_count_leaves_room_under_the_descriptor_limit() {
        assert_eq!(super::target_connections(1_048_576, false), 100_000);
        assert_eq!(super::target_connections(20_000, false), 17_500);
        assert_eq!(super::target_connections(20_000, true), 4_000);
    }
}
