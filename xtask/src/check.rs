//! Checks that keep a fresh machine working (run by `cargo xtask test`):
//! - xtask compiles before its bootstrap has installed anything, so nothing it
//!   builds (normal and build dependencies, through `tests` too) may have an eBPF
//!   build step; mesh-control (and meshctl in it) builds without eBPF or aya;
//! - the README's list of what a first run installs is the bootstrap's list.
//!
//! The graph comes from `cargo metadata`; the decisions are pure and table-tested.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{bootstrap, sh};

/// The build-dependency that marks a package whose build script builds eBPF.
const EBPF_BUILD_DEP: &str = "aya-build";

/// Packages that must build on a machine without the kernel toolchain, and the
/// packages each may not reach besides any with an eBPF build step.
const KERNEL_FREE: [(&str, &[&str]); 4] = [
    ("xtask", &[]),
    ("mesh-model", &["aya"]),
    ("mesh-infra", &["aya"]),
    ("mesh-control", &["aya"]),
];

/// One package of the resolved graph.
#[derive(Debug, Default)]
struct Node {
    name: String,
    ebpf_build: bool,
    /// Normal and build dependencies (what compiling the package compiles).
    deps: Vec<String>,
}

/// The resolved graph of `cargo metadata --format-version 1`, by package id.
fn graph(metadata: &Value) -> Result<BTreeMap<String, Node>> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for p in metadata["packages"]
        .as_array()
        .context("metadata: no packages")?
    {
        let id = p["id"].as_str().context("metadata: package without id")?;
        let ebpf_build = p["dependencies"].as_array().is_some_and(|deps| {
            deps.iter()
                .any(|d| d["name"] == EBPF_BUILD_DEP && d["kind"] == "build")
        });
        nodes.insert(
            id.to_owned(),
            Node {
                name: p["name"].as_str().unwrap_or("?").to_owned(),
                ebpf_build,
                deps: Vec::new(),
            },
        );
    }
    let resolve = metadata["resolve"]["nodes"]
        .as_array()
        .context("metadata: no resolve graph (run without --no-deps)")?;
    for n in resolve {
        let id = n["id"].as_str().unwrap_or_default();
        let deps = n["deps"].as_array().into_iter().flatten().filter(|d| {
            d["dep_kinds"].as_array().is_some_and(|kinds| {
                kinds
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build")
            })
        });
        let deps: Vec<String> = deps
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .collect();
        if let Some(node) = nodes.get_mut(id) {
            node.deps = deps;
        }
    }
    Ok(nodes)
}

/// For a root package, the first forbidden package it reaches and the path there
/// ("xtask -> ferrymesh-tests -> mesh-agent").
fn forbidden_path(
    nodes: &BTreeMap<String, Node>,
    root: &str,
    also_forbidden: &[&str],
) -> Option<(String, String)> {
    let start = nodes.iter().find(|(_, n)| n.name == root)?.0.clone();
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::from([start.clone()]);
    let mut queue = VecDeque::from([start]);
    while let Some(id) = queue.pop_front() {
        let node = &nodes[&id];
        let why = if node.ebpf_build {
            Some(format!("its build script builds eBPF ({EBPF_BUILD_DEP})"))
        } else if also_forbidden.contains(&node.name.as_str()) {
            Some(format!("{} needs the kernel toolchain", node.name))
        } else {
            None
        };
        if let Some(why) = why {
            let mut path = vec![node.name.clone()];
            let mut at = id;
            while let Some(p) = parent.get(&at) {
                path.push(nodes[p].name.clone());
                at = p.clone();
            }
            path.reverse();
            return Some((path.join(" -> "), why));
        }
        for d in &node.deps {
            if nodes.contains_key(d) && seen.insert(d.clone()) {
                parent.insert(d.clone(), id.clone());
                queue.push_back(d.clone());
            }
        }
    }
    None
}

/// Problems with the dependency graph, one sentence each.
fn graph_problems(metadata: &Value) -> Result<Vec<String>> {
    let nodes = graph(metadata)?;
    let mut problems = Vec::new();
    for (root, also) in KERNEL_FREE {
        if !nodes.values().any(|n| n.name == root) {
            problems.push(format!("package {root} is not in the workspace"));
            continue;
        }
        if let Some((path, why)) = forbidden_path(&nodes, root, also) {
            problems.push(format!(
                "{root} must build without rust-src and bpf-linker, but reaches {path}: {why}"
            ));
        }
    }
    Ok(problems)
}

const README_START: &str = "<!-- first-run-installs -->";
const README_END: &str = "<!-- /first-run-installs -->";

/// The names in the first column of the README's table of what a first run
/// installs (between the markers).
fn readme_installs(readme: &str) -> Result<BTreeSet<String>> {
    let (_, rest) = readme
        .split_once(README_START)
        .with_context(|| format!("README.md has no {README_START} marker"))?;
    let (table, _) = rest
        .split_once(README_END)
        .with_context(|| format!("README.md has no {README_END} marker"))?;
    Ok(table
        .lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|l| l.split('|').next())
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .filter(|c| !c.is_empty() && !c.starts_with('-') && c != "what")
        .collect())
}

fn list_problems(readme: &str) -> Result<Vec<String>> {
    let documented = readme_installs(readme)?;
    let installed: BTreeSet<String> = bootstrap::prerequisites()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut problems = Vec::new();
    for missing in installed.difference(&documented) {
        problems.push(format!(
            "the bootstrap installs {missing}, which README.md's first-run table does not list"
        ));
    }
    for extra in documented.difference(&installed) {
        problems.push(format!(
            "README.md's first-run table lists {extra}, which the bootstrap does not install"
        ));
    }
    Ok(problems)
}

/// Runs both checks on this workspace.
pub fn run() -> Result<()> {
    sh::step("checking that xtask, mesh-model, mesh-infra and mesh-control build without eBPF, and that README.md lists what the bootstrap installs");
    let out = sh::cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let readme = std::fs::read_to_string(sh::workspace_root().join("README.md"))
        .context("reading README.md")?;
    let mut problems = graph_problems(&metadata)?;
    problems.extend(list_problems(&readme)?);
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
