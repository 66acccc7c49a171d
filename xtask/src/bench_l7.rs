//! `cargo xtask bench` L7 part: HTTP/1.1 and HTTP/2 through the waypoint vs L4 only
//! vs no mesh, same lab and run: latency at a fixed 1,000 requests/s (lab-http's
//! open-loop client on hyper: each request timed from its scheduled start, so
//! queueing counts), the most requests/s (h2load, nghttp2), and the agent's RSS
//! with 1,000 concurrent streams through the waypoint.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::sh::step;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: bench}
spec:
  clusterIPs: [198.18.100.70]
  selector: {app: remote}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
"#;

fn spec() -> LabSpec {
    LabSpec {
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("bench".into(), false)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("remote", "bench", "b"),
        ],
        services: vec![],
        agent_args: vec![],
        local_ca: false,
    }
}

struct Load {
    req_per_s: f64,
}

/// Runs h2load in the client pod: requests/s.
fn h2load(lab: &Lab, args: &[&str]) -> Result<Load> {
    let out = lab.run_in_pod("client", "h2load", args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let req_per_s = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse::<f64>().ok())
        .with_context(|| format!("h2load printed no rate:\n{text}"))?;
    Ok(Load { req_per_s })
}

fn set_meshed(lab: &mut Lab, meshed: bool) -> Result<()> {
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

pub fn run(quick: bool) -> Result<Value> {
    step("L7 bench lab: client (a) -> remote (b) running lab-http; Service web (appProtocol http) at 198.18.100.70");
    let mut lab = Lab::new(spec())?;
    lab.set_extra_config(SERVICE)?;
    lab.start_agents()?;
    let _server = lab.http_server("remote", "remote", &[])?;
    let direct = format!("http://{}:8080/", lab.pod("remote").ip4);
    let via_waypoint = "http://198.18.100.70/".to_owned();
    let n_fixed = if quick { "2000" } else { "10000" };
    let n_max = if quick { "5000" } else { "30000" };
    let rounds = if quick { 1 } else { 3 };
    let mut rows = serde_json::Map::new();
    // (mode, meshed, url)
    let modes = [
        ("no mesh", false, &direct),
        ("L4 (mTLS)", true, &direct),
        ("waypoint", true, &via_waypoint),
    ];
    for proto in ["http1", "http2"] {
        for (mode, meshed, url) in &modes {
            set_meshed(&mut lab, *meshed)?;
            let h1: &[&str] = if proto == "http1" { &["--h1"] } else { &[] };
            let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
            for round in 1..=rounds {
                step(&format!("{proto} {mode}, round {round}/{rounds}: {n_fixed} requests at 1,000/s (10 connections x 100/s), then h2load as fast as possible"));
                let mut args = vec![
                    "get",
                    "--url",
                    url.as_str(),
                    "--count",
                    n_fixed,
                    "--concurrency",
                    "10",
                    "--rate",
                    "1000",
                ];
                if proto == "http2" {
                    args.push("--h2");
                }
                let fixed = lab
                    .http_app("client", &args)?
                    .json_result(Duration::from_secs(300))?;
                let expected: u64 = n_fixed.parse()?;
                if fixed["statuses"]["200"].as_u64() != Some(expected) {
                    bail!("{proto} {mode}: not all {expected} requests answered 200: {fixed}");
                }
                let mut args = h1.to_vec();
                args.extend_from_slice(&[
                    "-n",
                    n_max,
                    "-c",
                    "10",
                    "-m",
                    if proto == "http1" { "1" } else { "10" },
                    url.as_str(),
                ]);
                let top = h2load(&lab, &args)?;
                p50.push(fixed["p50_us"].as_f64().unwrap_or(f64::NAN));
                p99.push(fixed["p99_us"].as_f64().unwrap_or(f64::NAN));
                max.push(top.req_per_s);
            }
            let med = |mut v: Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            rows.insert(
                format!("{proto} {mode}"),
                json!({"p50_us_at_1000rps": med(p50), "p99_us_at_1000rps": med(p99), "max_req_per_s": med(max)}),
            );
        }
    }

    step("waypoint RSS with 1,000 concurrent HTTP/2 streams (10 connections x 100 streams, each held 2 s)");
    set_meshed(&mut lab, true)?;
    let idle = lab.agent_rss_kib("a").unwrap_or(0);
    let url = "http://198.18.100.70/delay/2000".to_owned();
    let child = lab.spawn_in_pod(
        "client",
        "h2load",
        &["-n", "1000", "-c", "10", "-m", "100", &url],
    )?;
    let mut peak = idle;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(lab.agent_rss_kib("a").unwrap_or(0));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let done = text
        .lines()
        .find(|l| l.starts_with("requests: "))
        .unwrap_or("")
        .to_owned();
    let active = lab.stats("a")?;
    drop(lab);

    println!();
    println!(
        "{:<22} {:>16} {:>16} {:>12}",
        "HTTP through", "p50 us @1k/s", "p99 us @1k/s", "max req/s"
    );
    for (k, v) in &rows {
        println!(
            "{k:<22} {:>16.1} {:>16.1} {:>12.0}",
            v["p50_us_at_1000rps"].as_f64().unwrap_or(f64::NAN),
            v["p99_us_at_1000rps"].as_f64().unwrap_or(f64::NAN),
            v["max_req_per_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let mut verdicts = Vec::new();
    for proto in ["http1", "http2"] {
        let l4 = &rows[&format!("{proto} L4 (mTLS)")];
        let wp = &rows[&format!("{proto} waypoint")];
        let d50 = wp["p50_us_at_1000rps"].as_f64().unwrap_or(f64::NAN)
            - l4["p50_us_at_1000rps"].as_f64().unwrap_or(f64::NAN);
        let d99 = wp["p99_us_at_1000rps"].as_f64().unwrap_or(f64::NAN)
            - l4["p99_us_at_1000rps"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{proto}: waypoint adds {d50:.1} us p50 (target <= 50 {}) and {d99:.1} us p99 (target <= 150 {}) over L4",
            if d50 <= 50.0 { "met" } else { "MISSED" },
            if d99 <= 150.0 { "met" } else { "MISSED" }
        );
        verdicts.push(json!({"metric": format!("{proto} waypoint added p50 us"), "value": d50, "target": "<= 50", "met": d50 <= 50.0}));
        verdicts.push(json!({"metric": format!("{proto} waypoint added p99 us"), "value": d99, "target": "<= 150", "met": d99 <= 150.0}));
    }
    println!(
        "agent RSS with 1,000 concurrent streams through the waypoint: peak {peak} KiB (idle {idle} KiB; target <= 32768 {}); h2load {done}",
        if peak <= 32768 { "met" } else { "MISSED" }
    );
    verdicts.push(json!({"metric": "agent RSS KiB at 1000 concurrent waypoint streams", "value": peak, "target": "<= 32768", "met": peak <= 32768}));
    Ok(json!({
        "rows": rows,
        "targets": verdicts,
        "rss_kib": {"idle": idle, "peak_1000_streams": peak, "h2load": done},
        "agent_stats_after": active["workloads"],
    }))
}
