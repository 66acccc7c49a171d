//! Checks the machine and installs what is missing, saying what it does.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::sh::{have, output, run, run_quietly, step};

pub const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PACKAGE: &str = "libllvm22";
const LLVM_FEATURE: &str = "llvm-22";
/// Debian packages the lab and tests use, with a command each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("util-linux", "nsenter"),
    ("procps", "sysctl"),
    ("tcpdump", "tcpdump"),
    // Waypoint tests and bench: real HTTP/1.1, HTTP/2 and TLS clients.
    ("curl", "curl"),
    ("nghttp2-client", "h2load"),
    // The fast-path tests' non-blocking peers and the bench's peer-tool rows.
    ("iperf3", "iperf3"),
    // The telemetry test scrapes the agents with a real Prometheus.
    ("prometheus", "prometheus"),
    ("openssl", "openssl"),
];

/// Everything a first run may install, by the name the README's table uses.
pub fn prerequisites() -> Vec<&'static str> {
    let mut all = vec!["rust-src", "bpf-linker", LLVM_PACKAGE];
    all.extend(PACKAGES.iter().map(|(p, _)| *p));
    all
}

/// The machine requirements that cannot be installed: one sentence each.
pub fn check_machine() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("ferrymesh's lab needs root (network namespaces, cgroups, eBPF); run as root");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); use a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    }
    if ferrymesh_tests::sys::cgroup2_root().is_err() {
        bail!(
            "cgroup v2 is not mounted; mount it (mount -t cgroup2 none /sys/fs/cgroup) and retry"
        );
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    step(&format!(
        "installing Debian packages: {}",
        packages.join(" ")
    ));
    if !have("apt-get") {
        bail!(
            "no apt-get here (not Debian or Ubuntu): install {} with this system's package manager and run again (README: When a step cannot install)",
            packages.join(", ")
        );
    }
    run_quietly(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: is the package mirror reachable? Or install the packages by hand (README: When a step cannot install)")?;
    run_quietly(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| !have(cmd))
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step("installing rust-src (the eBPF programs build core from source)");
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

fn ensure_bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"))
        .or_else(|| output(Command::new(cargo_home().join("bin/bpf-linker")).arg("--version")))
        .unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    step(&format!("installing bpf-linker {BPF_LINKER_VERSION} against Debian's {LLVM_PACKAGE} (once, about 2 minutes)"));
    let find_llvm = || {
        output(Command::new("dpkg").args(["-L", LLVM_PACKAGE])).and_then(|files| {
            files
                .lines()
                .find(|l| l.contains("/libLLVM.so."))
                .map(PathBuf::from)
        })
    };
    let lib = match find_llvm() {
        Some(l) => l,
        None => {
            apt_install(&[LLVM_PACKAGE])?;
            find_llvm().with_context(|| {
                format!("{LLVM_PACKAGE} installed but no libLLVM.so found in it")
            })?
        }
    };
    // bpf-linker's build wants <prefix>/lib/libLLVM.so.
    let prefix = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/ferrymesh/llvm-22");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    run(crate::sh::cargo()
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            LLVM_FEATURE,
            "--locked",
        ])
        .env("LLVM_PREFIX", &prefix))
}

/// Everything the build and the tests need, installed if missing.
pub fn ensure() -> Result<()> {
    step("checking the machine (root, BTF, cgroup v2)");
    check_machine()?;
    ensure_packages()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    // cargo's bin directory must be on PATH for aya-build to find bpf-linker.
    let bin = cargo_home().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
        paths.push(bin);
        // SAFETY: single-threaded at this point; children inherit it.
        unsafe { std::env::set_var("PATH", std::env::join_paths(paths)?) };
    }
    Ok(())
}
