//! Thin wrappers around the commands the lab runs (iproute2, nsenter).
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs a command, failing with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}; is it installed? (`cargo xtask` installs iproute2 and util-linux)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a command inside a named network namespace without `ip netns exec` (which
/// remounts /sys and hides the cgroup tree).
pub fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net=/run/netns/{ns}");
    let mut full = vec![net.as_str(), "--"];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

/// The cgroup v2 mount point.
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
            (ty == "cgroup2").then(|| std::path::PathBuf::from(dir))
        })
        .context("no cgroup v2 mount found (/proc/self/mounts); the lab needs cgroup v2")
}

/// Prefix of every lab namespace; `lab clean` removes namespaces that start with it.
pub const NS_PREFIX: &str = "fm-";
/// Directory under the cgroup v2 root that holds every lab run's cgroups.
pub const CGROUP_DIR: &str = "ferrymesh-lab";

/// bpffs directory holding every lab run's pinned attachments.
pub const BPFFS_DIR: &str = "/sys/fs/bpf/ferrymesh-lab";

/// Removes every lab leftover: processes in lab cgroups, lab namespaces, cgroups.
/// Returns what it removed.
pub fn clean_all() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let root = cgroup2_root()?.join(CGROUP_DIR);
    if root.exists() {
        kill_cgroup_tree(&root);
        removed.push(root.display().to_string());
    }
    if std::path::Path::new(BPFFS_DIR).exists() {
        let _ = std::fs::remove_dir_all(BPFFS_DIR);
        removed.push(BPFFS_DIR.to_owned());
    }
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(NS_PREFIX) {
            let _ = ip(&["netns", "del", name]);
            removed.push(format!("netns {name}"));
        }
    }
    Ok(removed)
}

/// Kills every process below `dir` (cgroup.kill) and removes the cgroups, deepest first.
pub fn kill_cgroup_tree(dir: &std::path::Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    // A cgroup can be removed once its killed processes are gone.
    let gone = crate::eventually(
        std::time::Duration::from_secs(1),
        "the cgroups to go",
        || {
            remove_cgroups(dir);
            if dir.exists() {
                Err(dir.display().to_string())
            } else {
                Ok(())
            }
        },
    );
    if let Err(e) = gone {
        eprintln!("lab cleanup: {e:#}");
    }
}

fn remove_cgroups(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroups(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
