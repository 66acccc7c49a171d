//! `cargo xtask bench` L7 part: HTTP/1.1 and HTTP/2 through the waypoint vs L4 only
//! vs no mesh, same lab and run: latency at a fixed 1,000 requests/s (lab-http's
//! open-loop client on hyper: each request timed from its scheduled start, so
//! queueing counts), the most requests/s (h2load, nghttp2), and the agent's RSS
//! with 1,000 concurrent streams through the waypoint.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrymesh_tests::{Lab, LabSpec, PodSpec};
use serde_json::{json, Value};

use crate::{
    bench_util::{median, met, set_meshed},
    sh::step,
};

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

/// The load of one round.
struct Sizes {
    /// Requests at the fixed rate.
    fixed: &'static str,
    /// Requests h2load sends as fast as it can.
    max: &'static str,
    rounds: usize,
}

pub fn run(quick: bool) -> Result<Value> {
    step("L7 bench lab: client (a) -> remote (b) running lab-http; Service web (appProtocol http) at 198.18.100.70");
    let mut lab = Lab::new(spec())?;
    lab.set_extra_config(SERVICE)?;
    lab.start_agents()?;
    let _server = lab.http_server("remote", "remote", &[])?;
    let sizes = if quick {
        Sizes {
            fixed: "2000",
            max: "5000",
            rounds: 1,
        }
    } else {
        Sizes {
            fixed: "10000",
            max: "30000",
            rounds: 3,
        }
    };
    let rows = latency_rows(&mut lab, &sizes)?;
    let rss = rss_under_streams(&mut lab)?;
    let active = lab.stats("a")?;
    drop(lab);
    let mut verdicts = report(&rows);
    println!(
        "agent RSS with 1,000 concurrent streams through the waypoint: peak {} KiB (idle {} KiB; target <= 32768 {}); h2load {}",
        rss.peak, rss.idle, met(rss.peak <= 32768), rss.h2load
    );
    verdicts.push(json!({"metric": "agent RSS KiB at 1000 concurrent waypoint streams", "value": rss.peak, "target": "<= 32768", "met": rss.peak <= 32768}));
    Ok(json!({
        "rows": rows,
        "targets": verdicts,
        "rss_kib": {"idle": rss.idle, "peak_1000_streams": rss.peak, "h2load": rss.h2load},
        "agent_stats_after": active["workloads"],
    }))
}

/// Per protocol and mode (no mesh, L4, waypoint): medians over rounds.
fn latency_rows(lab: &mut Lab, sizes: &Sizes) -> Result<serde_json::Map<String, Value>> {
    let direct = format!("http://{}:8080/", lab.pod("remote").ip4);
    let via_waypoint = "http://198.18.100.70/".to_owned();
    let modes = [
        ("no mesh", false, &direct),
        ("L4 (mTLS)", true, &direct),
        ("waypoint", true, &via_waypoint),
    ];
    let mut rows = serde_json::Map::new();
    for proto in ["http1", "http2"] {
        for (mode, meshed, url) in &modes {
            set_meshed(lab, *meshed)?;
            let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
            for round in 1..=sizes.rounds {
                step(&format!("{proto} {mode}, round {round}/{}: {} requests at 1,000/s (10 connections x 100/s), then h2load as fast as possible", sizes.rounds, sizes.fixed));
                let fixed = fixed_rate(lab, proto, url, sizes.fixed)
                    .with_context(|| format!("{proto} {mode}"))?;
                p50.push(fixed["p50_us"].as_f64().unwrap_or(f64::NAN));
                p99.push(fixed["p99_us"].as_f64().unwrap_or(f64::NAN));
                max.push(h2load(lab, &h2load_args(proto, url, sizes.max))?.req_per_s);
            }
            rows.insert(
                format!("{proto} {mode}"),
                json!({"p50_us_at_1000rps": median(p50), "p99_us_at_1000rps": median(p99), "max_req_per_s": median(max)}),
            );
        }
    }
    Ok(rows)
}

/// `count` requests at 1,000/s from lab-http's open-loop client; all must be 200.
fn fixed_rate(lab: &Lab, proto: &str, url: &str, count: &str) -> Result<Value> {
    let mut args = vec![
        "get",
        "--url",
        url,
        "--count",
        count,
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
    let expected: u64 = count.parse()?;
    if fixed["statuses"]["200"].as_u64() != Some(expected) {
        bail!("not all {expected} requests answered 200: {fixed}");
    }
    Ok(fixed)
}

fn h2load_args<'a>(proto: &str, url: &'a str, count: &'a str) -> Vec<&'a str> {
    let mut args = if proto == "http1" {
        vec!["--h1"]
    } else {
        vec![]
    };
    let streams = if proto == "http1" { "1" } else { "10" };
    args.extend_from_slice(&["-n", count, "-c", "10", "-m", streams, url]);
    args
}

struct Rss {
    idle: u64,
    peak: u64,
    /// h2load's `requests:` line.
    h2load: String,
}

/// The agent's RSS, sampled while 1,000 streams are held open through the waypoint.
fn rss_under_streams(lab: &mut Lab) -> Result<Rss> {
    step("waypoint RSS with 1,000 concurrent HTTP/2 streams (10 connections x 100 streams, each held 2 s)");
    set_meshed(lab, true)?;
    let idle = lab.agent_rss_kib("a").unwrap_or(0);
    let url = "http://198.18.100.70/delay/2000".to_owned();
    let child = lab.spawn_in_pod(
        "client",
        "h2load",
        &["-n", "1000", "-c", "10", "-m", "100", &url],
    )?;
    let mut peak = idle;
    // Sampling (30 samples over the streams' 2 s), not synchronisation.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(lab.agent_rss_kib("a").unwrap_or(0));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let h2load = text
        .lines()
        .find(|l| l.starts_with("requests: "))
        .unwrap_or("")
        .to_owned();
    Ok(Rss { idle, peak, h2load })
}

/// Prints the table and the waypoint's added latency over L4; the verdicts.
fn report(rows: &serde_json::Map<String, Value>) -> Vec<Value> {
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<22} {:>16} {:>16} {:>12}",
        "HTTP through", "p50 us @1k/s", "p99 us @1k/s", "max req/s"
    );
    for (k, v) in rows {
        println!(
            "{k:<22} {:>16.1} {:>16.1} {:>12.0}",
            num(v, "p50_us_at_1000rps"),
            num(v, "p99_us_at_1000rps"),
            num(v, "max_req_per_s")
        );
    }
    let mut verdicts = Vec::new();
    for proto in ["http1", "http2"] {
        let l4 = &rows[&format!("{proto} L4 (mTLS)")];
        let wp = &rows[&format!("{proto} waypoint")];
        let d50 = num(wp, "p50_us_at_1000rps") - num(l4, "p50_us_at_1000rps");
        let d99 = num(wp, "p99_us_at_1000rps") - num(l4, "p99_us_at_1000rps");
        println!(
            "{proto}: waypoint adds {d50:.1} us p50 (target <= 50 {}) and {d99:.1} us p99 (target <= 150 {}) over L4",
            met(d50 <= 50.0),
            met(d99 <= 150.0)
        );
        verdicts.push(json!({"metric": format!("{proto} waypoint added p50 us"), "value": d50, "target": "<= 50", "met": d50 <= 50.0}));
        verdicts.push(json!({"metric": format!("{proto} waypoint added p99 us"), "value": d99, "target": "<= 150", "met": d99 <= 150.0}));
        let ratio = num(wp, "max_req_per_s") / num(l4, "max_req_per_s");
        println!(
            "{proto}: waypoint max req/s {ratio:.2}x of L4's (target >= 0.6x {})",
            met(ratio >= 0.6)
        );
        verdicts.push(json!({"metric": format!("{proto} waypoint max req/s vs L4"), "value": ratio, "target": ">= 0.6x", "met": ratio >= 0.6}));
    }
    verdicts
}
