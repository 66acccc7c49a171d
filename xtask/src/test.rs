//! `cargo xtask test`: bootstrap, build, lint, then every test.
use anyhow::Result;

use crate::{
    bootstrap, build,
    sh::{self, run as sh_run, step},
};

pub fn run_tests(args: &[String]) -> Result<()> {
    step("running unit tests and lab integration tests (real eBPF, network namespaces)");
    sh_run(sh::cargo().args(["test", "--workspace"]).args(args))
}

pub fn run(lint: bool, args: &[String]) -> Result<()> {
    crate::check::run()?;
    crate::cycles::run(&sh::workspace_root())?;
    bootstrap::ensure()?;
    build::all(false)?;
    if lint {
        step("cargo fmt --check");
        sh_run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
        step("cargo clippy -D warnings");
        sh_run(sh::cargo().args([
            "clippy",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    crate::deploy::run(false)?;
    run_tests(args)?;
    let leftovers = ferrymesh_tests::sys::clean_all()?;
    if leftovers.iter().any(|l| l.starts_with("netns")) {
        println!("note: removed lab leftovers: {}", leftovers.join(", "));
    }
    Ok(())
}
