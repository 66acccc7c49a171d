//! Running commands and saying what happens: the `==>` steps, commands whose
//! failure names them, and the inner `cargo` for the workspace.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

pub fn step(msg: &str) {
    println!("==> {msg}");
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command whose progress is noise (apt-get): its output is shown only
/// when it fails, with the command.
pub fn run_quietly(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
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
