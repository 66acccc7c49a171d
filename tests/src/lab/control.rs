//! The CA / control plane process of the lab, in the fabric namespace.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::netns;

use super::core::Lab;
use super::spec::*;
use crate::eventually::eventually;

impl Lab {
    /// Where a node's agent gets certificates: the CA service, or its own CA.
    pub(super) fn ca_args(&self, node: &str) -> Vec<std::ffi::OsString> {
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
    pub(super) fn start_ca(&mut self) -> Result<()> {
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
        let listening = || {
            netns::within(&fabric, move || {
                Ok(std::net::TcpStream::connect_timeout(
                    &addr,
                    Duration::from_millis(200),
                )?)
            })
        };
        eventually(Duration::from_secs(10), "the CA to listen", listening)
            .with_context(|| format!("CA log:\n{}", self.ca_log()))?;
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
}
