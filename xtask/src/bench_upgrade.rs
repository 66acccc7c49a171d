//! `cargo xtask bench` upgrade part: the same load with and without an agent
//! upgrade on both nodes (a second agent takes the running one's sockets), in
//! interleaved rounds. Load: new connections one after another from client (a)
//! to server (b), each a 1-byte echo (`churn`: completed and failed; `connlat`:
//! latency percentiles, whose max is the longest stall), and one held connection
//! that must echo after the upgrade (a reset would fail it).
use std::time::Duration;

use anyhow::{Context, Result};
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::{bench_util::median, sh::step};

const ROUNDS: usize = 3;

fn spec() -> LabSpec {
    LabSpec {
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("bench".into(), true)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("server", "bench", "b"),
        ],
        services: vec![],
        agent_args: vec!["--drain-seconds".into(), "20".into()],
        local_ca: false,
    }
}

/// One round: churn and connlat at once, the agents upgraded meanwhile if
/// `upgrade`; what the load saw.
fn round(lab: &mut Lab, to: &str, count: &str, upgrade: bool) -> Result<Value> {
    let mut held = lab.app("client", &["hold", "--to", to])?;
    held.expect_line("connected", Duration::from_secs(10))?;
    let churn = lab.app("client", &["churn", "--to", to, "--count", count])?;
    let lat = lab.app("client", &["connlat", "--to", to, "--count", count])?;
    let mut old = Vec::new();
    if upgrade {
        old.push(lab.begin_upgrade("a")?);
        old.push(lab.begin_upgrade("b")?);
    }
    let churn = churn.json_result(Duration::from_secs(300))?;
    let lat = lat
        .json_result(Duration::from_secs(300))
        .unwrap_or(json!({}));
    held.send_line("after")?;
    let held_ok = held
        .expect_line("echo", Duration::from_secs(10))
        .is_ok_and(|l| l == "echo after");
    drop(held);
    for o in &mut old {
        o.wait_exit(Duration::from_secs(60))
            .context("the replaced agent to exit")?;
    }
    Ok(json!({
        "upgrade": upgrade,
        "completed": churn["ok"], "failed": churn["failed"],
        "held_connection_kept": held_ok,
        "connect_p50_us": lat["p50_us"], "connect_p99_us": lat["p99_us"],
        "longest_stall_us": lat["max_us"],
    }))
}

fn summary(rounds: &[Value], upgrade: bool) -> Value {
    let of = |k: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r["upgrade"] == upgrade)
            .filter_map(|r| r[k].as_f64())
            .collect()
    };
    let failed: f64 = of("failed").iter().sum();
    let kept = rounds
        .iter()
        .filter(|r| r["upgrade"] == upgrade)
        .all(|r| r["held_connection_kept"] == true);
    json!({
        "completed_median": median(of("completed")),
        "failed_total": failed,
        "held_connections_kept": kept,
        "connect_p50_us": median(of("connect_p50_us")),
        "connect_p99_us": median(of("connect_p99_us")),
        "longest_stall_us_max": of("longest_stall_us").into_iter().fold(0.0, f64::max),
    })
}

pub fn run(quick: bool) -> Result<Value> {
    step("upgrade bench: new connections a -> b with and without both agents upgraded, interleaved rounds");
    let mut lab = Lab::new(spec())?;
    lab.start_agents()?;
    let mut server = lab.app("server", &["serve", "--port", "8080"])?;
    server.expect_line("listening", Duration::from_secs(30))?;
    let to = lab.pod("server").addr4(8080).to_string();
    let count = if quick { "500" } else { "2000" };
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        for upgrade in [false, true] {
            rounds.push(round(&mut lab, &to, count, upgrade)?);
        }
    }
    let (base, up) = (summary(&rounds, false), summary(&rounds, true));
    println!();
    println!("upgrade of both agents during {count} sequential new connections (x{ROUNDS} rounds, interleaved):");
    println!("                          no upgrade      upgrade");
    for (k, label) in [
        ("completed_median", "completed (median)"),
        ("failed_total", "failed (total)"),
        ("connect_p50_us", "new conn p50 us"),
        ("connect_p99_us", "new conn p99 us"),
        ("longest_stall_us_max", "longest stall us"),
    ] {
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!("  {label:<22} {:>12.0} {:>12.0}", f(&base[k]), f(&up[k]));
    }
    println!(
        "  held connection kept    {:>12} {:>12}",
        base["held_connections_kept"], up["held_connections_kept"]
    );
    Ok(json!({"rounds": rounds, "no_upgrade": base, "upgrade": up}))
}
