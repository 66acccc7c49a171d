//! `cargo xtask bench` TLS part: rustls's crypto providers (ring, the mesh's, and
//! aws-lc-rs, rustls's default) sealing and opening TLS 1.3 records in memory,
//! per cipher suite and record size (bench/tls-providers, built apart from the
//! workspace so the mesh does not build aws-lc). Set beside the peer part's
//! agents' CPU per GB, it says how much of a GB's CPU is cryptography.
use anyhow::{Context, Result};
use serde_json::Value;

use crate::sh::{cargo, run, step, workspace_root};

pub fn run_part(quick: bool) -> Result<Value> {
    step("TLS providers: ring vs aws-lc-rs, TLS 1.3 suites, 4 KiB and 16 KiB records (in memory)");
    let root = workspace_root();
    let target = root.join("target/tls-providers");
    run(cargo()
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("bench/tls-providers/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target))?;
    let mut cmd = std::process::Command::new(target.join("release/tls-providers"));
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().context("running tls-providers")?;
    anyhow::ensure!(
        out.status.success(),
        "tls-providers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("tls-providers printed no JSON")?;
    println!();
    println!(
        "{:<10} {:<32} {:>7} {:>9} {:>9}",
        "provider", "suite (TLS 1.3)", "record", "seal s/GB", "open s/GB"
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<32} {:>7} {:>9.3} {:>9.3}",
            r["provider"].as_str().unwrap_or("?"),
            r["suite"].as_str().unwrap_or("?"),
            r["record_bytes"].as_u64().unwrap_or(0),
            r["seal_cpu_s_per_gb"].as_f64().unwrap_or(f64::NAN),
            r["open_cpu_s_per_gb"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(v)
}
