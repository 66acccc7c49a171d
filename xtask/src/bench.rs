//! `cargo xtask bench`: each scenario with no mesh and captured, in the same run and
//! the same lab, so the ratios compare like with like. Prints a table, writes JSON.
use std::{path::Path, time::Duration};

use anyhow::Result;
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::{bootstrap, bootstrap::step, build};

/// Bytes per throughput run; FERRYMESH_BENCH_QUICK=1 makes every run smaller.
fn stream_bytes() -> u64 {
    if quick() {
        128 << 20
    } else {
        512 << 20
    }
}
fn quick() -> bool {
    std::env::var_os("FERRYMESH_BENCH_QUICK").is_some()
}
const RR_COUNT: &str = "5000";
const CONN_COUNT: &str = "1000";
const REPEATS: usize = 3;

fn spec() -> LabSpec {
    LabSpec {
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("bench".into(), false)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("local", "bench", "a"),
            PodSpec::new("remote", "bench", "b"),
        ],
        services: vec![],
        agent_args: vec![],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One round of one mode (no mesh or captured): every scenario on both paths.
fn measure(lab: &Lab) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (path, target) in [("cross-node", "remote"), ("same-node", "local")] {
        let ip = lab.pod(target).ip4;
        let r = lab.run_client(
            "client",
            &[
                "stream",
                "--to",
                &format!("{ip}:9000"),
                "--bytes",
                &stream_bytes().to_string(),
            ],
        )?;
        let rr = lab.run_client(
            "client",
            &[
                "rr",
                "--to",
                &format!("{ip}:8080"),
                "--count",
                RR_COUNT,
                "--size",
                "64",
            ],
        )?;
        let conn = lab.run_client(
            "client",
            &[
                "connlat",
                "--to",
                &format!("{ip}:8080"),
                "--count",
                CONN_COUNT,
            ],
        )?;
        out.insert(
            path.to_owned(),
            json!({
                "throughput_gbit_s": r["gbit_per_s"],
                "rr64_p50_us": rr["p50_us"], "rr64_p99_us": rr["p99_us"],
                "connect_p50_us": conn["p50_us"], "connect_p99_us": conn["p99_us"],
            }),
        );
    }
    Ok(Value::Object(out))
}

/// The per-metric median over rounds.
fn combine(rounds: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for path in ["cross-node", "same-node"] {
        let mut m = serde_json::Map::new();
        for metric in [
            "throughput_gbit_s",
            "rr64_p50_us",
            "rr64_p99_us",
            "connect_p50_us",
            "connect_p99_us",
        ] {
            let v: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r[path][metric].as_f64())
                .collect();
            if !v.is_empty() {
                m.insert(metric.to_owned(), json!(median(v)));
            }
        }
        out.insert(path.to_owned(), Value::Object(m));
    }
    Value::Object(out)
}

fn set_mode(lab: &mut Lab, meshed: bool) -> Result<()> {
    lab.set_meshed("bench", meshed)?;
    for n in ["a", "b"] {
        lab.wait_stats(n, "enrolment to settle", |s| {
            s["enrolled"]
                .as_array()
                .is_some_and(|a| a.is_empty() != meshed)
        })?;
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

pub fn run(out: &Path) -> Result<()> {
    bootstrap::ensure()?;
    build::all(true)?;
    step("bench lab: 2 nodes; pods client (a), local (a), remote (b); echo :8080, sink :9000");
    let mut lab = Lab::new(spec())?;
    lab.start_agents()?;
    let _servers = [
        lab.app("local", &["serve", "--port", "8080", "--sink", "9000"])?,
        lab.app("remote", &["serve", "--port", "8080", "--sink", "9000"])?,
    ];
    std::thread::sleep(Duration::from_millis(300));

    let rounds = if quick() { 1 } else { REPEATS };
    let (mut base_rounds, mut mesh_rounds) = (Vec::new(), Vec::new());
    let mut idle_rss = Vec::new();
    for round in 1..=rounds {
        step(&format!(
            "round {round}/{rounds}: no mesh (namespace not labelled)"
        ));
        set_mode(&mut lab, false)?;
        base_rounds.push(measure(&lab)?);
        step(&format!(
            "round {round}/{rounds}: captured (labelled ambient; plaintext through the agents)"
        ));
        set_mode(&mut lab, true)?;
        if round == 1 {
            idle_rss = ["a", "b"]
                .iter()
                .filter_map(|n| lab.agent_rss_kib(n))
                .collect();
        }
        mesh_rounds.push(measure(&lab)?);
    }
    let (base, mesh) = (combine(&base_rounds), combine(&mesh_rounds));
    let captured_total = lab.counter("a", "bench/client", "outbound_connected")?;
    let busy_rss: Vec<u64> = ["a", "b"]
        .iter()
        .filter_map(|n| lab.agent_rss_kib(n))
        .collect();
    drop(lab);

    println!();
    println!(
        "{:<11} {:<22} {:>10} {:>10} {:>8}  target",
        "path", "metric", "no mesh", "captured", "ratio"
    );
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for path in ["cross-node", "same-node"] {
        let (b, m) = (&base[path], &mesh[path]);
        let tput = f(&m["throughput_gbit_s"]) / f(&b["throughput_gbit_s"]);
        let added_rr = f(&m["rr64_p50_us"]) - f(&b["rr64_p50_us"]);
        let conn = f(&m["connect_p50_us"]);
        let lines = [
            (
                "throughput Gbit/s",
                f(&b["throughput_gbit_s"]),
                f(&m["throughput_gbit_s"]),
                format!("{tput:.2}x"),
                tput >= 0.75,
                ">= 0.75x".to_owned(),
            ),
            (
                "rr 64B p50 us",
                f(&b["rr64_p50_us"]),
                f(&m["rr64_p50_us"]),
                format!("+{added_rr:.1}"),
                added_rr <= 20.0,
                "added <= 20 us".to_owned(),
            ),
            (
                "rr 64B p99 us",
                f(&b["rr64_p99_us"]),
                f(&m["rr64_p99_us"]),
                format!("+{:.1}", f(&m["rr64_p99_us"]) - f(&b["rr64_p99_us"])),
                true,
                String::new(),
            ),
            (
                "new conn p50 us",
                f(&b["connect_p50_us"]),
                conn,
                format!("+{:.1}", conn - f(&b["connect_p50_us"])),
                conn - f(&b["connect_p50_us"]) <= 150.0,
                "added <= 150 us".to_owned(),
            ),
            (
                "new conn p99 us",
                f(&b["connect_p99_us"]),
                f(&m["connect_p99_us"]),
                format!("+{:.1}", f(&m["connect_p99_us"]) - f(&b["connect_p99_us"])),
                true,
                String::new(),
            ),
        ];
        for (name, bv, mv, ratio, ok, target) in lines {
            let mark = if target.is_empty() {
                ""
            } else if ok {
                "met"
            } else {
                "MISSED"
            };
            println!("{path:<11} {name:<22} {bv:>10.2} {mv:>10.2} {ratio:>8}  {target} {mark}");
            if !target.is_empty() {
                verdicts.push(json!({"path": path, "metric": name, "target": target, "met": ok}));
            }
            rows.push(json!({"path": path, "metric": name, "no_mesh": bv, "captured": mv, "delta_or_ratio": ratio}));
        }
    }
    let idle_max = idle_rss.iter().copied().max().unwrap_or(0);
    let rss_ok = idle_max <= 8 * 1024;
    println!(
        "agent RSS idle (pods enrolled): {idle_rss:?} KiB, after the runs: {busy_rss:?} KiB; target idle <= 8192 KiB {}",
        if rss_ok { "met" } else { "MISSED" }
    );
    verdicts.push(json!({"metric": "agent idle RSS KiB", "value": idle_max, "target": "<= 8192", "met": rss_ok}));
    let missed: Vec<&Value> = verdicts.iter().filter(|v| v["met"] == false).collect();
    if !missed.is_empty() {
        println!("{} target(s) missed; see the rows marked MISSED (figures above, reasons in the issue note)", missed.len());
    }
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "stream_bytes": stream_bytes(), "repeats": REPEATS,
        "no_mesh": base, "captured": mesh, "rows": rows, "targets": verdicts,
        "rounds": {"no_mesh": base_rounds, "captured": mesh_rounds},
        "agent_rss_kib": {"idle": idle_rss, "after": busy_rss},
        "captured_connections_on_a": captured_total,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
