//! Building the agent (and with it the eBPF object) and the lab app.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::bootstrap::{run, step};

pub struct Binaries {
    pub agent: PathBuf,
    pub app: PathBuf,
}

/// Variables a user sets to configure cargo; every other `CARGO_*` variable seen
/// here was set by the `cargo run` that started xtask.
const CARGO_CONFIG_PREFIXES: [&str; 15] = [
    "CARGO_HOME",
    "CARGO_TARGET_",
    "CARGO_BUILD_",
    "CARGO_TERM_",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_PROFILE_",
    "CARGO_INCREMENTAL",
    "CARGO_UNSTABLE_",
    "CARGO_ALIAS_",
    "CARGO_LOG",
    "CARGO_CACHE_",
    "CARGO_INSTALL_",
];

/// Whether an inherited variable is one `cargo run` set for xtask itself.
pub fn set_by_cargo_run(name: &str) -> bool {
    name == "CARGO"
        || (name.starts_with("CARGO_")
            && !CARGO_CONFIG_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// A `cargo` command for the workspace without what `cargo run` set for xtask
/// (CARGO_PKG_*, CARGO_MANIFEST_*, CARGO_PRIMARY_PACKAGE, ...): build scripts that
/// track those (ring's does) would otherwise see them change between the outer and
/// the inner cargo, and half the workspace would be rebuilt on every call.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn all(release: bool) -> Result<Binaries> {
    step(&format!(
        "building the eBPF programs, mesh-agent, mesh-control, meshctl and the lab apps ({})",
        if release { "release" } else { "debug" }
    ));
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "mesh-agent",
        "-p",
        "ferrymesh-tests",
        "-p",
        "mesh-control",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let dir = workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" });
    let bins = Binaries {
        agent: dir.join("mesh-agent"),
        app: dir.join("lab-app"),
    };
    // The lab finds them through these.
    // SAFETY: single-threaded at this point.
    unsafe {
        std::env::set_var("MESH_AGENT_BIN", &bins.agent);
        std::env::set_var("LAB_APP_BIN", &bins.app);
        std::env::set_var("MESH_CONTROL_BIN", dir.join("mesh-control"));
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_only_what_cargo_run_set() {
        let cases = [
            ("CARGO", true),
            ("CARGO_PKG_NAME", true),
            ("CARGO_MANIFEST_DIR", true),
            ("CARGO_PRIMARY_PACKAGE", true),
            ("CARGO_BIN_NAME", true),
            ("CARGO_HOME", false),
            ("CARGO_TARGET_DIR", false),
            ("CARGO_BUILD_JOBS", false),
            ("CARGO_NET_OFFLINE", false),
            ("CARGO_REGISTRIES_CRATES_IO_PROTOCOL", false),
            ("PATH", false),
        ];
        for (name, stripped) in cases {
            assert_eq!(super::set_by_cargo_run(name), stripped, "{name}");
        }
    }
}
