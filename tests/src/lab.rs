//! Building, running and tearing down a lab cluster.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    app::App,
    netns,
    sys::{self, in_ns, ip, CGROUP_DIR, NS_PREFIX},
};

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
}

impl PodSpec {
    pub fn new(name: &str, namespace: &str, node: &str) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            node: node.into(),
            labels: vec![("app".into(), name.into())],
        }
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
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
    agent: Option<Child>,
    log: PathBuf,
}

pub struct Lab {
    pub run: String,
    pub spec: LabSpec,
    pub dir: PathBuf,
    fabric: String,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    cgroup_run: PathBuf,
    agents_cgroup: PathBuf,
    config: PathBuf,
    ca: Option<Child>,
    extra_config: String,
    /// Agents take their config from `mesh-agent control` (which serves the lab's
    /// directory) instead of reading the file.
    control_plane: bool,
    /// The config leaves out pods' netns; each agent finds them itself among its
    /// node's pinned namespaces (`<dir>/netns/<node>/`), as on a real node.
    cluster_mode: bool,
}

fn run_id() -> String {
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
fn in_cgroup_and_netns(cgroup: &Path, netns: &str, program: &Path) -> Command {
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

impl Lab {
    /// Creates namespaces, links, addresses, routes and cgroups. No agent runs yet.
    pub fn new(spec: LabSpec) -> Result<Lab> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the lab needs root (network namespaces, cgroups, eBPF)");
        }
        let run = run_id();
        let dir = std::env::temp_dir().join(format!("ferrymesh-lab-{run}"));
        std::fs::create_dir_all(&dir)?;
        let cgroup_run = sys::cgroup2_root()?.join(CGROUP_DIR).join(&run);
        let agents_cgroup = cgroup_run.join("agents");
        let mut lab = Lab {
            fabric: format!("{NS_PREFIX}{run}-fabric"),
            config: dir.join("mesh.yaml"),
            run,
            spec: spec.clone(),
            dir,
            nodes: Vec::new(),
            pods: Vec::new(),
            services: Vec::new(),
            cgroup_run,
            agents_cgroup,
            ca: None,
            extra_config: String::new(),
            control_plane: false,
            cluster_mode: false,
        };
        // From here on, Drop cleans up whatever was made.
        lab.build()?;
        lab.write_config()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.agents_cgroup)
            .context("creating the lab cgroup (is cgroup v2 writable?)")?;
        let fab = self.fabric.clone();
        ip(&["netns", "add", &fab])?;
        ip(&["-n", &fab, "link", "set", "lo", "up"])?;
        ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fab, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            &fab,
            "addr",
            "add",
            &format!("{CA_IP}/24"),
            "dev",
            "br0",
        ])?;
        let node_names = self.spec.nodes.clone();
        for (i, name) in node_names.iter().enumerate() {
            let n = i + 1;
            let ns = format!("{NS_PREFIX}{}-{name}", self.run);
            ip(&["netns", "add", &ns])?;
            let cgroup = self.cgroup_run.join(name);
            std::fs::create_dir_all(&cgroup)?;
            self.nodes.push(Node {
                name: name.clone(),
                netns: ns.clone(),
                cgroup,
                agent: None,
                log: self.dir.join(format!("agent-{name}.log")),
            });
            for s in [
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                in_ns(&ns, &["sysctl", "-qw", s])?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let peer = format!("n{n}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
                &fab,
            ])?;
            ip(&["-n", &fab, "link", "set", &peer, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.18.0.{n}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8::{n}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "add", "cbr0", "type", "bridge"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.19.{n}.1/24"),
                "dev",
                "cbr0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8:1:{n}::1/64"),
                "dev",
                "cbr0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "cbr0", "up"])?;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            for j in 0..self.nodes.len() {
                if i == j {
                    continue;
                }
                let m = j + 1;
                ip(&[
                    "-n",
                    &node.netns,
                    "route",
                    "add",
                    &format!("198.19.{m}.0/24"),
                    "via",
                    &format!("198.18.0.{m}"),
                ])?;
                ip(&[
                    "-n",
                    &node.netns,
                    "-6",
                    "route",
                    "add",
                    &format!("2001:db8:1:{m}::/64"),
                    "via",
                    &format!("2001:db8::{m}"),
                ])?;
            }
        }
        // The fabric (where the CA listens, IPv4 only) reaches pods through their
        // node, as a control plane reaches pods through the pod network.
        for m in 1..=self.nodes.len() {
            let fabric = self.fabric.clone();
            ip(&[
                "-n",
                &fabric,
                "route",
                "add",
                &format!("198.19.{m}.0/24"),
                "via",
                &format!("198.18.0.{m}"),
            ])?;
        }
        let pods = self.spec.pods.clone();
        for spec in pods {
            let (i, node) = self
                .nodes
                .iter()
                .enumerate()
                .find(|(_, n)| n.name == spec.node)
                .with_context(|| format!("pod {} names unknown node {}", spec.name, spec.node))?;
            let n = i + 1;
            let j = self
                .pods
                .iter()
                .filter(|p| p.spec.node == spec.node)
                .count()
                + 10;
            let ns = format!("{NS_PREFIX}{}-{}-{}", self.run, spec.namespace, spec.name);
            let node_ns = node.netns.clone();
            let cgroup = node
                .cgroup
                .join(format!("{}_{}", spec.namespace, spec.name));
            ip(&["netns", "add", &ns])?;
            std::fs::create_dir_all(&cgroup)?;
            in_ns(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
            in_ns(
                &ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"],
            )?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let host_if = format!("v{j}");
            ip(&[
                "-n", &node_ns, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&[
                "-n", &node_ns, "link", "set", &host_if, "master", "cbr0", "up",
            ])?;
            let ip4: IpAddr = format!("198.19.{n}.{j}").parse()?;
            let ip6: IpAddr = format!("2001:db8:1:{n}::{j}").parse()?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip4}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("198.19.{n}.1"),
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("2001:db8:1:{n}::1"),
            ])?;
            self.pods.push(Pod {
                spec,
                netns: ns,
                cgroup,
                ip4,
                ip6,
            });
        }
        for (k, spec) in self.spec.services.clone().into_iter().enumerate() {
            self.services.push(Service {
                spec,
                vip4: format!("198.18.100.{}", k + 1).parse()?,
                vip6: format!("2001:db8:100::{}", k + 1).parse()?,
            });
        }
        Ok(())
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.spec.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in the lab"))
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.spec.name == name)
            .unwrap_or_else(|| panic!("no service {name} in the lab"))
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the lab"))
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The config file every agent reads, rendered from the lab's model.
    pub fn render_config(&self) -> String {
        let mut y = String::new();
        for n in &self.nodes {
            let i = self
                .nodes
                .iter()
                .position(|x| x.name == n.name)
                .unwrap_or(0)
                + 1;
            let _ = write!(
                y,
                "apiVersion: ferrymesh.io/v1alpha1\nkind: Node\nmetadata:\n  name: {}\nspec:\n  addresses: [198.18.0.{i}, \"2001:db8::{i}\"]\n---\n",
                n.name
            );
        }
        for (ns, meshed) in &self.spec.namespaces {
            let label = if *meshed {
                "\n  labels:\n    ferrymesh.io/dataplane-mode: ambient"
            } else {
                ""
            };
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}{label}\n---\n"
            );
        }
        for p in &self.pods {
            let labels: Vec<String> = p
                .spec
                .labels
                .iter()
                .map(|(k, v)| format!("    {k}: {v}"))
                .collect();
            let _ = write!(
                y,
                "apiVersion: ferrymesh.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n{}\nspec:\n  node: {}\n  serviceAccount: {}\n  addresses: [{}, \"{}\"]\n{}---\n",
                p.spec.name,
                p.spec.namespace,
                labels.join("\n"),
                p.spec.node,
                p.spec.name,
                p.ip4,
                p.ip6,
                if self.cluster_mode {
                    String::new()
                } else {
                    format!("  netns: {}\n", p.netns_path().display())
                }
            );
        }
        y.push_str(&self.extra_config);
        if !self.extra_config.is_empty() && !self.extra_config.ends_with("---\n") {
            y.push_str("\n---\n");
        }
        for s in &self.services {
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  clusterIPs: [{}, \"{}\"]\n  selector:\n    app: {}\n  ports:\n  - name: tcp\n    port: {}\n    targetPort: {}\n---\n",
                s.spec.name, s.spec.namespace, s.vip4, s.vip6, s.spec.app, s.spec.port, s.spec.target_port
            );
        }
        y
    }

    /// Replaces the extra objects and waits until every running agent applied them.
    pub fn apply_config(&mut self, yaml: &str) -> Result<()> {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.agent.is_some())
            .map(|n| n.name.clone())
            .collect();
        let mut before = Vec::new();
        for n in &nodes {
            before.push(self.stats(n)?["config"]["generation"].as_u64().unwrap_or(0));
        }
        self.set_extra_config(yaml)?;
        for (n, g) in nodes.iter().zip(before) {
            self.wait_stats(n, "the new config to be applied", |s| {
                s["config"]["generation"].as_u64() > Some(g)
            })?;
        }
        Ok(())
    }

    /// Adds objects (YAML documents) to the rendered config and rewrites it.
    pub fn set_extra_config(&mut self, yaml: &str) -> Result<()> {
        self.extra_config = yaml.to_owned();
        self.write_config()
    }

    /// The node a pod runs on, and the netns name of a pod or node.
    pub fn netns_name(&self, pod_or_node: &str) -> String {
        match self.pods.iter().find(|p| p.spec.name == pod_or_node) {
            Some(p) => p.netns.clone(),
            None => self.node(pod_or_node).netns.clone(),
        }
    }

    /// Runs a command inside a pod's or node's network namespace (not its cgroup,
    /// so it is not captured) and returns its stdout.
    pub fn exec_in(&self, pod_or_node: &str, args: &[&str]) -> Result<String> {
        sys::in_ns(&self.netns_name(pod_or_node), args)
    }

    /// Replaces the config atomically (write + rename), as an operator's tool would.
    pub fn write_raw_config(&self, text: &str) -> Result<()> {
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config)?;
        Ok(())
    }

    pub fn write_config(&self) -> Result<()> {
        self.write_raw_config(&self.render_config())
    }

    /// Puts a namespace in or out of the mesh and rewrites the config.
    pub fn set_meshed(&mut self, namespace: &str, meshed: bool) -> Result<()> {
        for (ns, m) in &mut self.spec.namespaces {
            if ns == namespace {
                *m = meshed;
            }
        }
        self.write_config()
    }

    /// Starts one agent per node, each in the node's network namespace and in a cgroup
    /// below the node's (so its own sockets meet the capture programs and must pass).
    /// bpffs directory of this run's pinned attachments.
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(sys::BPFFS_DIR).join(&self.run)
    }

    /// Kills one node's agent without warning (SIGKILL), as a crash would.
    pub fn kill_agent(&mut self, node: &str) -> Result<()> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == node)
            .context("node")?;
        let mut child = n.agent.take().context("agent not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts one node's agent again.
    pub fn start_agent(&mut self, node: &str) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == node)
            .context("node")?;
        self.start_agent_at(i, &agent_binary()?)?;
        self.wait_ready(node)
    }

    /// Where a node's agent gets certificates: the CA service, or its own CA.
    fn ca_args(&self, node: &str) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        if self.spec.local_ca {
            a.push("--local-ca-dir".into());
            a.push(self.dir.join(format!("local-ca-{node}")).into());
        } else {
            a.push("--ca-address".into());
            a.push(format!("https://{CA_IP}:{CA_PORT}").into());
            a.push("--ca-root".into());
            a.push(self.ca_dir().join("root-cert.pem").into());
            a.push("--ca-token-file".into());
            a.push(self.dir.join("tokens").join(node).into());
        }
        a
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// Creates the CA root and node tokens, then runs `mesh-control` in the fabric
    /// namespace (a process of its own, as on a cluster) on the lab's directory: the
    /// CA (its inventory is that config) and config distribution, which agents use
    /// after `use_control_plane`.
    fn start_ca(&mut self) -> Result<()> {
        let bin = control_binary()?;
        let ca_dir = self.ca_dir();
        let tokens = self.dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        for (i, n) in self.nodes.iter().enumerate() {
            std::fs::write(
                tokens.join(&n.name),
                format!("token-{}-{i}-{}", self.run, n.name),
            )?;
        }
        let out = Command::new(&bin)
            .args(["ca", "init", "--dir"])
            .arg(&ca_dir)
            .output()?;
        if !out.status.success() {
            bail!("ca init: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ca.log"))?;
        let mut cmd = in_cgroup_and_netns(&self.agents_cgroup, &self.fabric, &bin);
        cmd.arg("--ca-dir")
            .arg(&ca_dir)
            .args([
                "--listen",
                &format!("{CA_IP}:{CA_PORT}"),
                "--debounce-ms",
                "50",
                "--config-dir",
            ])
            .arg(&self.dir);
        let child = cmd
            .arg("--token-dir")
            .arg(&tokens)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the CA")?;
        self.ca = Some(child);
        let fabric = PathBuf::from(format!("/run/netns/{}", self.fabric));
        let addr: SocketAddr = format!("{CA_IP}:{CA_PORT}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while netns::within(&fabric, move || {
            Ok(std::net::TcpStream::connect_timeout(
                &addr,
                Duration::from_millis(200),
            )?)
        })
        .is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "CA did not listen within 10s:\n{}",
                    std::fs::read_to_string(self.dir.join("ca.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }

    /// From now on agents take their config from `mesh-control`, which serves the
    /// lab's directory (the config file is in it) with the CA. Call before
    /// `start_agents`.
    pub fn use_control_plane(&mut self) {
        self.control_plane = true;
    }

    /// Agents find pods' network namespaces themselves (the config has no netns):
    /// each node's pod namespaces are pinned (symlinked) under `<dir>/netns/<node>/`,
    /// as a container runtime pins them under /var/run/netns. Call before
    /// `start_agents`.
    pub fn use_cluster_mode(&mut self) -> Result<()> {
        self.cluster_mode = true;
        for p in &self.pods {
            let dir = self.dir.join("netns").join(&p.spec.node);
            std::fs::create_dir_all(&dir)?;
            let link = dir.join(format!("cni-{}", p.spec.name));
            if !link.exists() {
                std::os::unix::fs::symlink(p.netns_path(), &link)?;
            }
        }
        self.write_config()
    }

    /// Kills the CA / control plane process (SIGKILL).
    pub fn kill_control_plane(&mut self) -> Result<()> {
        let mut c = self.ca.take().context("no control plane running")?;
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Starts the CA / control plane again (same root, same tokens).
    pub fn start_control_plane(&mut self) -> Result<()> {
        self.start_ca()
    }

    pub fn ca_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.log")).unwrap_or_default()
    }

    pub fn start_agents(&mut self) -> Result<()> {
        let bin = agent_binary()?;
        if self.ca.is_none() && !self.spec.local_ca {
            self.start_ca()?;
        }
        for i in 0..self.nodes.len() {
            self.start_agent_at(i, &bin)?;
        }
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.wait_ready(&n)?;
        }
        Ok(())
    }

    fn start_agent_at(&mut self, i: usize, bin: &Path) -> Result<()> {
        let node = &self.nodes[i];
        let agent_cg = node.cgroup.join("agent");
        std::fs::create_dir_all(&agent_cg)?;
        let log = std::fs::File::create(&node.log)?;
        let mut cmd = in_cgroup_and_netns(&agent_cg, &node.netns, bin);
        cmd.arg("run");
        if self.control_plane {
            cmd.arg("--control-plane");
        } else {
            cmd.arg("--config").arg(&self.config);
        }
        if self.cluster_mode {
            cmd.arg("--netns-dir")
                .arg(self.dir.join("netns").join(&node.name))
                .arg("--no-proc-netns");
        }
        let child = cmd
            .args([
                "--node",
                &node.name,
                "--admin",
                ADMIN,
                "--reload-ms",
                "20",
                "--cgroup",
            ])
            .arg(&node.cgroup)
            .args(self.ca_args(&node.name))
            .arg("--pin-dir")
            .arg(self.pin_dir().join(&node.name))
            .args(&self.spec.agent_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mesh-agent")?;
        self.nodes[i].agent = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, node: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.admin(node, "/healthz/ready") {
                return Ok(());
            }
            let n = self
                .nodes
                .iter_mut()
                .find(|n| n.name == node)
                .context("node")?;
            if let Some(Some(status)) = n.agent.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "agent on {node} exited ({status}):\n{}",
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent on {node} not ready after 20s:\n{}",
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every agent and starts them again with `args` added (the CA stays).
    pub fn restart_agents(&mut self, args: &[&str]) -> Result<()> {
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.agent.is_some())
            .map(|n| n.name.clone())
            .collect();
        for n in names {
            self.stop_agent(&n)?;
        }
        self.spec.agent_args = args.iter().map(|a| a.to_string()).collect();
        self.start_agents()
    }

    /// Stops one node's agent with SIGTERM and waits for it to exit.
    pub fn stop_agent(&mut self, node: &str) -> Result<std::process::ExitStatus> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == node)
            .context("node")?;
        let mut child = n.agent.take().context("agent not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("agent on {node} ignored SIGTERM for 10s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of a node's agent (the shell execs nsenter, which execs the agent).
    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.node(node).agent.as_ref().map(Child::id)
    }

    /// Resident memory of a node's agent in KiB (VmRSS).
    pub fn agent_rss_kib(&self, node: &str) -> Option<u64> {
        let pid = self.agent_pid(node)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(&self.node(node).log).unwrap_or_default()
    }

    pub fn admin(&self, node: &str, path: &str) -> Result<(u16, String)> {
        let n = self.node(node);
        netns::http_get(
            &PathBuf::from(format!("/run/netns/{}", n.netns)),
            ADMIN.parse()?,
            path,
        )
    }

    /// The control plane's status (its admin API, in the fabric namespace).
    pub fn control_status(&self) -> Result<serde_json::Value> {
        let (status, body) = netns::http_get(
            &PathBuf::from(format!("/run/netns/{}", self.fabric)),
            "127.0.0.1:15014".parse()?,
            "/v1/status",
        )?;
        if status != 200 {
            bail!("control plane status: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The Prometheus text of a node's agent (its :15020 endpoint).
    pub fn metrics(&self, node: &str) -> Result<String> {
        let n = self.node(node);
        let (status, body) = netns::http_get(
            &PathBuf::from(format!("/run/netns/{}", n.netns)),
            "127.0.0.1:15020".parse()?,
            "/metrics",
        )?;
        if status != 200 {
            bail!("metrics of {node}: HTTP {status}");
        }
        Ok(body)
    }

    pub fn stats(&self, node: &str) -> Result<serde_json::Value> {
        let (status, body) = self.admin(node, "/stats")?;
        if status != 200 {
            bail!("stats of {node}: HTTP {status}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Polls the node's stats until `cond` holds (up to 15 s); returns the last stats.
    pub fn wait_stats(
        &self,
        node: &str,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        self.wait_stats_for(node, what, Duration::from_secs(15), cond)
    }

    /// As wait_stats, with a timeout of its own.
    pub fn wait_stats_for(
        &self,
        node: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats(node)?;
            if cond(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "{node}: timed out waiting for {what}; stats: {s:#}\nagent log:\n{}",
                    self.agent_log(node)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter of one workload on one node's agent (0 if absent).
    pub fn counter(&self, node: &str, workload: &str, name: &str) -> Result<u64> {
        let s = self.stats(node)?;
        Ok(s["workloads"][workload][name].as_u64().unwrap_or(0))
    }

    /// Starts a lab binary (it joins the pod's netns and cgroup itself).
    fn spawn_app(&self, bin: &Path, label: &str, pod: &str, args: &[&str]) -> Result<App> {
        let p = self.pod(pod);
        let child = Command::new(bin)
            .arg("--netns")
            .arg(p.netns_path())
            .arg("--cgroup")
            .arg(&p.cgroup)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        Ok(App::new(
            format!("{pod}: {label} {}", args.join(" ")),
            child,
        ))
    }

    /// Starts lab-app inside a pod (its netns and cgroup).
    pub fn app(&self, pod: &str, args: &[&str]) -> Result<App> {
        self.spawn_app(&app_binary()?, "lab-app", pod, args)
    }

    /// Starts lab-http inside a pod (its netns and cgroup).
    pub fn http_app(&self, pod: &str, args: &[&str]) -> Result<App> {
        self.spawn_app(&http_binary()?, "lab-http", pod, args)
    }

    /// Starts lab-http's servers in a pod (HTTP on 8080, gRPC on 9090, WebSocket on
    /// 8081), answering as `name`, and waits until they listen.
    pub fn http_server(&self, pod: &str, name: &str, extra: &[&str]) -> Result<App> {
        let mut args = vec![
            "serve", "--name", name, "--http", "8080", "--grpc", "9090", "--ws", "8081",
        ];
        args.extend_from_slice(extra);
        let mut app = self.http_app(pod, &args)?;
        app.expect_line("listening", Duration::from_secs(10))?;
        Ok(app)
    }

    /// Runs a program inside a pod's cgroup and netns, as the pod's application
    /// (so its connections are captured), and returns its output.
    pub fn run_in_pod(
        &self,
        pod: &str,
        program: &str,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let p = self.pod(pod);
        in_cgroup_and_netns(&p.cgroup, &p.netns, Path::new(program))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {pod}"))
    }

    /// Runs `mesh-agent waypoint` as pod `pod` (a Workload that opted out of capture
    /// with `ferrymesh.io/dataplane-mode: none`), with `args` added; waits until its
    /// readiness endpoint (127.0.0.1:15020 in the pod) says ready.
    pub fn start_waypoint(&self, pod: &str, args: &[&str]) -> Result<Waypoint> {
        let p = self.pod(pod).clone();
        let log = self.dir.join(format!("waypoint-{pod}.log"));
        let file = std::fs::File::create(&log)?;
        let child = in_cgroup_and_netns(&p.cgroup, &p.netns, &agent_binary()?)
            .args(["waypoint", "--config"])
            .arg(&self.config)
            .args([
                "--node",
                &p.spec.node,
                "--workload",
                &format!("{}/{}", p.spec.namespace, pod),
            ])
            .args(["--metrics", "127.0.0.1:15020", "--reload-ms", "20"])
            .args(self.ca_args(&p.spec.node))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting mesh-agent waypoint")?;
        let mut w = Waypoint {
            child,
            log,
            netns: p.netns_path(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) =
                netns::http_get(&w.netns, "127.0.0.1:15020".parse()?, "/healthz/ready")
            {
                return Ok(w);
            }
            if let Ok(Some(status)) = w.child.try_wait() {
                bail!("waypoint {pod} exited ({status}):\n{}", w.log_text());
            }
            if Instant::now() > deadline {
                bail!("waypoint {pod} not ready after 20s:\n{}", w.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a program inside a pod's cgroup and netns without waiting for it.
    pub fn spawn_in_pod(&self, pod: &str, program: &str, args: &[&str]) -> Result<Child> {
        let p = self.pod(pod);
        in_cgroup_and_netns(&p.cgroup, &p.netns, Path::new(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program} in {pod}"))
    }

    /// Starts an echo server in a pod and waits until it listens.
    pub fn server(&self, pod: &str, ports: &[u16]) -> Result<App> {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut app = self.app(pod, &["serve", "--port", &ports.join(",")])?;
        app.expect_line("listening", Duration::from_secs(10))?;
        Ok(app)
    }

    /// Runs a lab-app client to completion and returns its JSON result.
    pub fn run_client(&self, pod: &str, args: &[&str]) -> Result<serde_json::Value> {
        self.app(pod, args)?.json_result(Duration::from_secs(120))
    }

    /// Network namespace of the fabric (for captures on the bridge).
    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.agent.is_some())
            .map(|n| n.name.clone())
            .collect();
        for n in names {
            let _ = self.stop_agent(&n);
        }
        if let Some(mut ca) = self.ca.take() {
            let _ = ca.kill();
            let _ = ca.wait();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "--- agent log {} ---\n{}",
                    n.name,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                );
            }
            eprintln!("--- CA log ---\n{}", self.ca_log());
        }
        sys::kill_cgroup_tree(&self.cgroup_run);
        // Attachments a killed agent left pinned go with their files.
        let _ = std::fs::remove_dir_all(self.pin_dir());
        for p in &self.pods {
            let _ = ip(&["netns", "del", &p.netns]);
        }
        for n in &self.nodes {
            let _ = ip(&["netns", "del", &n.netns]);
        }
        let _ = ip(&["netns", "del", &self.fabric]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `mesh-agent waypoint` process; killed when dropped.
pub struct Waypoint {
    child: Child,
    pub log: PathBuf,
    netns: PathBuf,
}

impl Waypoint {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// GET on its metrics/readiness/stats endpoint.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        netns::http_get(&self.netns, "127.0.0.1:15020".parse()?, path)
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
