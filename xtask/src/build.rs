//! Building the agent (and with it the eBPF object) and the lab app.
use std::path::PathBuf;

use anyhow::Result;

use crate::sh::{cargo, run, step, workspace_root};

pub struct Binaries {
    pub agent: PathBuf,
    pub app: PathBuf,
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
