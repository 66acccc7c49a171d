//! `cargo xtask bench` peer-tool part: iperf3 (Debian's, the tool published
//! figures use) through no mesh, mTLS, and mTLS with the loopback fast path, in
//! interleaved rounds; the agents' CPU time per GB moved and per 1,000 round
//! trips; 4 and 64 parallel streams for multi-core use; same-node round trips with a polling (epoll-style) client, the
//! kind of application the fast path is for.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrymesh_tests::{eventually, Lab};
use serde_json::{json, Value};

use crate::{
    bench_util::{median, met, set_meshed},
    sh::step,
};

const MODES: [&str; 3] = ["no_mesh", "mtls", "mtls_fast_path"];

/// A child killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) both agents have used so far.
fn agents_cpu(lab: &Lab) -> f64 {
    ["a", "b"]
        .iter()
        .filter_map(|n| lab.agent_pid(n))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the command's closing parenthesis: utime is the 12th,
            // stime the 13th (clock ticks, 100 per second on Linux).
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) as f64 / 100.0
        })
        .sum()
}

/// One iperf3 run from the client to `target`: (Gbit/s, bytes, agents' CPU s).
fn iperf3(lab: &Lab, target: &str, parallel: u32, seconds: u32) -> Result<(f64, f64, f64)> {
    let ip = lab.pod(target).ip4.to_string();
    let (p, t) = (parallel.to_string(), seconds.to_string());
    // The server takes one test at a time and answers "busy" until the last
    // test's connections (64 of them, torn down through the mesh) are gone.
    eventually(Duration::from_secs(30), "iperf3 server idle", || {
        let out = lab.exec_in(
            target,
            &["ss", "-Htn", "state", "established", "sport = :5201"],
        );
        out.ok()
            .filter(|o| o.trim().is_empty())
            .ok_or("a test still running")
    })?;
    let cpu0 = agents_cpu(lab);
    let out = lab.run_in_pod(
        "client",
        "iperf3",
        &["-c", &ip, "-p", "5201", "-P", &p, "-t", &t, "-J"],
    )?;
    let cpu = agents_cpu(lab) - cpu0;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 printed no JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {target}: {e}");
    }
    let end = &v["end"]["sum_received"];
    Ok((
        end["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        end["bytes"].as_f64().unwrap_or(0.0),
        cpu,
    ))
}

/// Round trips of 64 bytes with a polling client and server (lab-app --poll),
/// with the agents' CPU seconds per 1,000 of them (Istio's "vCPU per 1,000
/// requests per second", for one connection of back-to-back requests).
fn rr_polled(lab: &Lab, target: &str, count: &str) -> Result<Value> {
    let to = format!("{}:8080", lab.pod(target).ip4);
    let cpu0 = agents_cpu(lab);
    let mut r = lab.run_client(
        "client",
        &[
            "--poll", "rr", "--to", &to, "--size", "64", "--count", count,
        ],
    )?;
    let n: f64 = count.parse().unwrap_or(1.0);
    r["cpu_s_per_1k"] = json!((agents_cpu(lab) - cpu0) / (n / 1000.0));
    Ok(r)
}

/// One mode's figures; with `tolerate`, a failed row is reported as an error
/// (the fast path's cross-node rows fail with ENOMEM: README "Performance").
fn measure(lab: &Lab, quick: bool, tolerate: bool) -> Result<Value> {
    let secs = if quick { 2 } else { 5 };
    let count = if quick { "2000" } else { "5000" };
    let mut out = serde_json::Map::new();
    let mut errors = Vec::new();
    let mut row = |r: Result<Vec<(&str, Value)>>| -> Result<()> {
        match r {
            Ok(kv) => out.extend(kv.into_iter().map(|(k, v)| (k.to_owned(), v))),
            Err(e) if tolerate => errors.push(format!("{e:#}")),
            Err(e) => return Err(e),
        }
        Ok(())
    };
    let per_gb = |cpu: f64, bytes: f64| {
        if bytes > 0.0 {
            cpu / (bytes / 1e9)
        } else {
            0.0
        }
    };
    row(iperf3(lab, "remote", 1, secs).map(|(g, b, c)| {
        vec![
            ("cross_gbit_s", json!(g)),
            ("cross_cpu_s_per_gb", json!(per_gb(c, b))),
        ]
    }))?;
    row(iperf3(lab, "remote", 4, secs).map(|(g, _, c)| {
        vec![
            ("cross_p4_gbit_s", json!(g)),
            ("cross_p4_agent_cores", json!(c / f64::from(secs))),
        ]
    }))?;
    row(iperf3(lab, "remote", 64, secs).map(|(g, _, c)| {
        vec![
            ("cross_p64_gbit_s", json!(g)),
            ("cross_p64_agent_cores", json!(c / f64::from(secs))),
        ]
    }))?;
    row(iperf3(lab, "local", 1, secs).map(|(g, b, c)| {
        vec![
            ("same_gbit_s", json!(g)),
            ("same_cpu_s_per_gb", json!(per_gb(c, b))),
        ]
    }))?;
    row(rr_polled(lab, "local", count).map(|r| {
        vec![
            ("same_rr64_p50_us", r["p50_us"].clone()),
            ("same_rr64_p99_us", r["p99_us"].clone()),
        ]
    }))?;
    row(rr_polled(lab, "remote", count).map(|r| {
        vec![
            ("cross_rr64_p50_us", r["p50_us"].clone()),
            ("cross_rr64_p99_us", r["p99_us"].clone()),
            ("cross_rr_cpu_s_per_1k", r["cpu_s_per_1k"].clone()),
        ]
    }))?;
    if !errors.is_empty() {
        out.insert("errors".into(), json!(errors));
    }
    Ok(Value::Object(out))
}

const METRICS: [(&str, &str); 13] = [
    ("cross_gbit_s", "iperf3 cross-node Gbit/s"),
    ("cross_cpu_s_per_gb", "agents CPU s per GB"),
    ("same_cpu_s_per_gb", "same-node CPU s per GB"),
    ("cross_p4_gbit_s", "iperf3 -P 4 Gbit/s"),
    ("cross_p4_agent_cores", "agents cores, -P 4"),
    ("cross_p64_gbit_s", "iperf3 -P 64 Gbit/s"),
    ("cross_p64_agent_cores", "agents cores, -P 64"),
    ("same_gbit_s", "iperf3 same-node Gbit/s"),
    ("same_rr64_p50_us", "same rr64 p50 us"),
    ("same_rr64_p99_us", "same rr64 p99 us"),
    ("cross_rr64_p50_us", "cross rr64 p50 us"),
    ("cross_rr64_p99_us", "cross rr64 p99 us"),
    ("cross_rr_cpu_s_per_1k", "agents CPU s per 1k rr"),
];

/// Switches the lab to `mode` (agents restarted for the fast path's flag).
fn enter(lab: &mut Lab, mode: &str) -> Result<()> {
    match mode {
        "no_mesh" => set_meshed(lab, false),
        "mtls" => {
            lab.restart_agents(&[])?;
            set_meshed(lab, true)
        }
        _ => {
            lab.restart_agents(&["--fast-path", "all"])?;
            set_meshed(lab, true)
        }
    }
}

pub fn run(quick: bool) -> Result<Value> {
    step("peer tools: iperf3 and polling round trips; no mesh, mTLS, mTLS + fast path");
    let mut lab = Lab::new(crate::bench_util::spec())?;
    lab.start_agents()?;
    let (mut servers, mut echoes) = (Vec::new(), Vec::new());
    for pod in ["local", "remote"] {
        // Its reports go to /dev/null: a piped stdout nobody reads fills after a
        // few -P 64 reports and blocks the server mid-test.
        servers.push(Running(lab.spawn_in_pod(
            pod,
            "iperf3",
            &["-s", "-p", "5201", "--logfile", "/dev/null"],
        )?));
        let mut echo = lab.app(pod, &["--poll", "serve", "--port", "8080"])?;
        echo.expect_line("listening", Duration::from_secs(30))?;
        eventually(Duration::from_secs(10), "iperf3 to listen", || {
            let out = lab.exec_in(pod, &["ss", "-Hltn", "sport = :5201"]);
            out.ok().filter(|o| !o.trim().is_empty()).ok_or("not yet")
        })?;
        echoes.push(echo);
    }
    let rounds = if quick { 1 } else { 3 };
    let mut per_mode: Vec<Vec<Value>> = vec![Vec::new(); MODES.len()];
    let started = Instant::now();
    for round in 1..=rounds {
        for (i, mode) in MODES.iter().enumerate() {
            step(&format!("peer tools round {round}/{rounds}: {mode}"));
            enter(&mut lab, mode)?;
            per_mode[i].push(measure(&lab, quick, *mode == "mtls_fast_path")?);
        }
    }
    drop(servers);
    drop(echoes);
    let combined: Vec<Value> = per_mode.iter().map(|r| combine(r)).collect();
    let mut verdicts = Vec::new();
    table(&combined, &mut verdicts);
    for (mode, rounds) in MODES.iter().zip(&per_mode) {
        for e in rounds
            .iter()
            .filter_map(|r| r["errors"].as_array())
            .flatten()
        {
            println!("{mode}: failed: {e}");
        }
    }
    Ok(json!({
        "modes": MODES, "rounds": rounds, "seconds": started.elapsed().as_secs(),
        "medians": {"no_mesh": combined[0], "mtls": combined[1], "mtls_fast_path": combined[2]},
        "per_round": per_mode, "targets": verdicts,
    }))
}

fn combine(rounds: &[Value]) -> Value {
    let mut m = serde_json::Map::new();
    for (metric, _) in METRICS {
        let v: Vec<f64> = rounds.iter().filter_map(|r| r[metric].as_f64()).collect();
        if !v.is_empty() {
            m.insert(metric.to_owned(), json!(median(v)));
        }
    }
    Value::Object(m)
}

fn table(c: &[Value], verdicts: &mut Vec<Value>) {
    let g = |i: usize, k: &str| c[i][k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<26} {:>9} {:>9} {:>15}",
        "peer tools (iperf3, polled rr)", "no mesh", "mTLS", "mTLS+fast path"
    );
    for (metric, label) in METRICS {
        println!(
            "{label:<26} {:>9.2} {:>9.2} {:>15.2}",
            g(0, metric),
            g(1, metric),
            g(2, metric)
        );
    }
    let mut target = |metric: &str, text: &str, value: f64, base: f64, ok: bool| {
        println!(
            "target {metric} {text}: {value:.2} (no mesh {base:.2}) {}",
            met(ok)
        );
        verdicts.push(
            json!({"metric": metric, "target": text, "value": value, "no_mesh": base, "met": ok}),
        );
    };
    let (b, f) = (g(0, "same_gbit_s"), g(2, "same_gbit_s"));
    target(
        "same-node iperf3 throughput, fast path",
        ">= 0.90x no mesh",
        f,
        b,
        f / b >= 0.90,
    );
    let (b, f) = (g(0, "same_rr64_p50_us"), g(2, "same_rr64_p50_us"));
    target(
        "same-node rr64 p50, fast path",
        "added <= 10 us",
        f,
        b,
        f - b <= 10.0,
    );
    let (b, m) = (g(0, "cross_gbit_s"), g(1, "cross_gbit_s"));
    target(
        "cross-node iperf3 throughput, mTLS",
        ">= 0.60x no mesh",
        m,
        b,
        m / b >= 0.60,
    );
    let cpu = g(1, "cross_cpu_s_per_gb");
    target(
        "agents CPU per GB, iperf3 cross-node mTLS",
        "<= 2.2 CPU-s",
        cpu,
        0.0,
        cpu <= 2.2,
    );
    // Istio publishes 0.06 vCPU per 1,000 requests per second for ztunnel.
    let cpu = g(1, "cross_rr_cpu_s_per_1k");
    target(
        "agents CPU per 1,000 round trips, cross-node mTLS",
        "<= 0.03 CPU-s (half of ztunnel's published 0.06)",
        cpu,
        0.0,
        cpu <= 0.03,
    );
}
