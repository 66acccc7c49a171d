//! Building the agent (and with it the eBPF object) and the lab app.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::bootstrap::{run, step};

pub struct Binaries {
    pub agent: PathBuf,
    pub app: PathBuf,
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
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).args([
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
    }
    Ok(bins)
}
