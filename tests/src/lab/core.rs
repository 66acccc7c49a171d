//! The lab: its parts, its config, and its teardown.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Child,
};

use anyhow::{bail, Context, Result};

use crate::sys::{self, ip, CGROUP_DIR, NS_PREFIX};

use super::spec::*;

pub struct Lab {
    pub run: String,
    pub spec: LabSpec,
    pub dir: PathBuf,
    pub(super) fabric: String,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub(super) cgroup_run: PathBuf,
    pub(super) agents_cgroup: PathBuf,
    pub(super) config: PathBuf,
    pub(super) ca: Option<Child>,
    pub(super) extra_config: String,
    /// Agents take their config from `mesh-agent control` (which serves the lab's
    /// directory) instead of reading the file.
    pub(super) control_plane: bool,
    /// The config leaves out pods' netns; each agent finds them itself among its
    /// node's pinned namespaces (`<dir>/netns/<node>/`), as on a real node.
    pub(super) cluster_mode: bool,
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

    pub(super) fn node(&self, name: &str) -> &Node {
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
            let annotations: String = p
                .spec
                .annotations
                .iter()
                .map(|(k, v)| format!("\n    {k}: {v:?}"))
                .collect();
            let annotations = if annotations.is_empty() {
                annotations
            } else {
                format!("  annotations:{annotations}\n")
            };
            let _ = write!(
                y,
                "apiVersion: ferrymesh.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {}\n  namespace: {}\n{annotations}  labels:\n{}\nspec:\n  node: {}\n  serviceAccount: {}\n  addresses: [{}, \"{}\"]\n{}---\n",
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

    /// Runs meshctl with `args` in the network namespace named `netns` (a node's,
    /// where its agent's admin API is, or the fabric's, where the control plane's
    /// is) and returns its stdout; an error carries its stderr.
    pub fn meshctl(&self, netns: &str, args: &[&str]) -> Result<String> {
        let bin = meshctl_binary()?;
        let mut all = vec![bin.to_str().context("meshctl path")?];
        all.extend_from_slice(args);
        sys::in_ns(netns, &all)
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
