//! `cargo xtask fuzz [--seconds N] [--target T]`: every fuzz target under fuzz/
//! (cargo-fuzz, libFuzzer) for N seconds each, starting from its committed corpus
//! and regressions; new inputs go to target/fuzz/corpus, crashes to
//! target/fuzz/artifacts. Installs cargo-fuzz when missing. Runs on the stable
//! toolchain (RUSTC_BOOTSTRAP for cargo-fuzz's flags) without a sanitizer: the
//! targets are safe Rust, and what they look for is panics and broken promises.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::sh::{self, step, workspace_root};

/// The targets (fuzz/fuzz_targets/<name>.rs), as mesh_agent::fuzzing lists them.
pub const TARGETS: [&str; 5] = ["config", "hbone_connect", "http_head", "jwt", "csr"];

#[derive(Debug, Serialize)]
struct Outcome {
    target: String,
    seconds: u64,
    executions: Option<u64>,
    corpus_inputs: usize,
    crash: Option<PathBuf>,
}

fn ensure_cargo_fuzz() -> Result<()> {
    if sh::output(sh::cargo().args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    step("installing cargo-fuzz (cargo install cargo-fuzz --locked; once, ~2 min)");
    sh::run(sh::cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn cargo_fuzz(root: &Path) -> Command {
    let mut c = sh::cargo();
    c.current_dir(root).env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
    c
}

/// "Done 123456 runs in 60 second(s)" or "stat::number_of_executed_units: N".
pub fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        if let Some(rest) = l.strip_prefix("stat::number_of_executed_units:") {
            return rest.trim().parse().ok();
        }
        let rest = l.strip_prefix("Done ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn run_one(root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let out = root.join("target/fuzz");
    let corpus = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    // Only this run's crashes count.
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;
    step(&format!("fuzzing {target} for {seconds} s"));
    let result = cargo_fuzz(root)
        .args(["run", "--sanitizer", "none", "-O", target])
        .arg(&corpus)
        .arg(root.join("fuzz/corpus").join(target))
        .arg(root.join("fuzz/regressions").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .with_context(|| format!("running cargo fuzz for {target}"))?;
    let log = String::from_utf8_lossy(&result.stderr).into_owned();
    std::fs::write(out.join(format!("{target}.log")), &log)?;
    let crash = std::fs::read_dir(&artifacts)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        });
    if !result.status.success() && crash.is_none() {
        bail!(
            "cargo fuzz {target} failed without an artifact; see {}/{target}.log",
            out.display()
        );
    }
    Ok(Outcome {
        target: target.into(),
        seconds,
        executions: executions(&log),
        corpus_inputs: count_files(&corpus),
        crash,
    })
}

pub fn run(seconds: u64, only: Option<&str>) -> Result<()> {
    let root = workspace_root();
    ensure_cargo_fuzz()?;
    step("building the fuzz targets (release, coverage instrumentation; no eBPF)");
    sh::run(cargo_fuzz(&root).args(["build", "--sanitizer", "none", "-O"]))?;
    let mut outcomes = Vec::new();
    for t in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        outcomes.push(run_one(&root, t, seconds)?);
    }
    if outcomes.is_empty() {
        bail!(
            "no fuzz target named {only:?}; targets: {}",
            TARGETS.join(", ")
        );
    }
    println!(
        "\n{:<14} {:>14} {:>8}  result",
        "target", "executions", "corpus"
    );
    for o in &outcomes {
        let runs = o.executions.map_or("?".into(), |n| n.to_string());
        let result = match &o.crash {
            Some(p) => format!("CRASH {}", p.display()),
            None => "no crash".into(),
        };
        println!(
            "{:<14} {:>14} {:>8}  {result}",
            o.target, runs, o.corpus_inputs
        );
    }
    let summary = root.join("target/fuzz/summary.json");
    std::fs::write(&summary, serde_json::to_string_pretty(&outcomes)?)?;
    println!("summary: {}", summary.display());
    let crashes: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.crash
                .as_ref()
                .map(|c| format!("{}: {}", o.target, c.display()))
        })
        .collect();
    if !crashes.is_empty() {
        bail!(
            "the fuzzers found crashes:\n  {}\nreproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none -O <target> <file>`; once fixed, copy each file into fuzz/regressions/<target>/ so `cargo xtask test` replays it",
            crashes.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn executions_are_read_from_libfuzzers_report() {
        let log = "#1024\tpulse cov: 10\nDone 81234 runs in 16 second(s)\nstat::number_of_executed_units: 81240\n";
        assert_eq!(super::executions(log), Some(81240));
        assert_eq!(super::executions("Done 7 runs in 1 second(s)\n"), Some(7));
        assert_eq!(super::executions("nothing"), None);
    }

    #[test]
    fn the_targets_here_are_the_agents() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
        for t in super::TARGETS {
            assert!(dir.join(format!("{t}.rs")).exists(), "{t}");
        }
    }
}
