//! What a lab is made of: its spec, its nodes, pods and services, and where the
//! binaries it runs are.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command},
};

use anyhow::{bail, Result};

pub const ADMIN: &str = "127.0.0.1:15000";
/// The CA service's address on the fabric bridge.
pub const CA_IP: &str = "198.18.0.254";
pub const CA_PORT: u16 = 15012;

#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl PodSpec {
    pub fn new(name: &str, namespace: &str, node: &str) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            node: node.into(),
            labels: vec![("app".into(), name.into())],
            annotations: Vec::new(),
        }
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.push((k.into(), v.into()));
        self
    }
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// Selects pods whose `app` label has this value.
    pub app: String,
    pub port: u16,
    pub target_port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct LabSpec {
    pub nodes: Vec<String>,
    /// Namespaces and whether they are in the mesh.
    pub namespaces: Vec<(String, bool)>,
    pub pods: Vec<PodSpec>,
    pub services: Vec<ServiceSpec>,
    /// Extra arguments for every agent (e.g. `--exclude-port 9999`).
    pub agent_args: Vec<String>,
    /// Agents run their own in-process CA (single node) instead of the CA service.
    pub local_ca: bool,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub spec: PodSpec,
    pub netns: String,
    pub cgroup: PathBuf,
    pub ip4: IpAddr,
    pub ip6: IpAddr,
}

impl Pod {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.netns))
    }
    pub fn addr4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip4, port)
    }
    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip6, port)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub spec: ServiceSpec,
    pub vip4: IpAddr,
    pub vip6: IpAddr,
}

pub struct Node {
    pub name: String,
    pub netns: String,
    pub cgroup: PathBuf,
    pub(super) agent: Option<Child>,
    pub(super) log: PathBuf,
}

pub(super) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:06x}",
        (std::process::id() ^ nanos.rotate_left(7)) & 0xff_ffff
    )
}

/// A command that joins `cgroup` and enters the named netns, then execs `program`.
pub(super) fn in_cgroup_and_netns(cgroup: &Path, netns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(cgroup)
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(program);
    cmd
}

/// Where the mesh-agent binary is: $MESH_AGENT_BIN, else next to the test binary.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MESH_AGENT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let p = dir.join("mesh-agent");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("mesh-agent binary not found near {}; run `cargo xtask test` (it builds it) or set MESH_AGENT_BIN", exe.display())
}

/// Where lab-app is: $LAB_APP_BIN, else next to the mesh-agent binary.
pub fn app_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAB_APP_BIN") {
        return Ok(p.into());
    }
    let p = agent_binary()?.with_file_name("lab-app");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "lab-app binary not found at {}; build with `cargo build -p ferrymesh-tests`",
        p.display()
    )
}

/// Where the control plane is: $MESH_CONTROL_BIN, else next to the mesh-agent binary.
/// Where meshctl is: next to the mesh-agent binary (both built by the workspace).
pub fn meshctl_binary() -> Result<PathBuf> {
    let p = agent_binary()?.with_file_name("meshctl");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "meshctl not found at {}; run `cargo xtask test` (it builds it)",
        p.display()
    )
}

pub fn control_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MESH_CONTROL_BIN") {
        return Ok(p.into());
    }
    let p = agent_binary()?.with_file_name("mesh-control");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "mesh-control binary not found at {}; build with `cargo build -p mesh-control`",
        p.display()
    )
}

/// Where lab-http (HTTP/gRPC/WebSocket peers) is: next to lab-app.
pub fn http_binary() -> Result<PathBuf> {
    let p = app_binary()?.with_file_name("lab-http");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "lab-http binary not found at {}; build with `cargo build -p ferrymesh-tests`",
        p.display()
    )
}
