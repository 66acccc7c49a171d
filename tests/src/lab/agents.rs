//! The agents: starting, stopping, and what they report.
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::netns;

use super::core::Lab;
use super::spec::*;
use crate::eventually::eventually;

/// The agent an upgrade replaced, draining.
pub struct OldAgent {
    child: Child,
    /// Its log (moved aside when the new agent started).
    pub log: PathBuf,
}

impl OldAgent {
    /// Waits until it has drained and exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        eventually(timeout, "the replaced agent to drain and exit", || {
            self.child.try_wait().ok().flatten().ok_or("still running")
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Lab {
    /// Starts a second agent on `node` beside the running one, as a DaemonSet
    /// surge pod does, and waits until it is ready (it took the running one's
    /// sockets); the old one drains and exits on its own.
    pub fn begin_upgrade(&mut self, node: &str) -> Result<OldAgent> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == node)
            .context("node")?;
        let child = self.nodes[i].agent.take().context("agent not running")?;
        let log = self.nodes[i].log.with_extension("replaced.log");
        std::fs::rename(&self.nodes[i].log, &log)?;
        self.start_agent_at(i, &agent_binary()?)?;
        self.wait_ready(node)?;
        Ok(OldAgent { child, log })
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
        self.spawn_agent(node)?;
        self.wait_ready(node)
    }

    /// Starts one node's agent without waiting for it (`wait_agent_ready` does).
    pub fn spawn_agent(&mut self, node: &str) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == node)
            .context("node")?;
        self.start_agent_at(i, &agent_binary()?)
    }

    /// Waits until the node's agent reports ready.
    pub fn wait_agent_ready(&mut self, node: &str) -> Result<()> {
        self.wait_ready(node)
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

    pub(super) fn start_agent_at(&mut self, i: usize, bin: &Path) -> Result<()> {
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
            .arg("--state-dir")
            .arg(self.dir.join("state").join(&node.name))
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

    pub(super) fn wait_ready(&mut self, node: &str) -> Result<()> {
        let what = format!("the agent on {node} to be ready");
        // Ok(Err(..)): it exited, waiting longer will not help.
        let outcome = eventually(Duration::from_secs(20), &what, || {
            if let Ok((200, _)) = self.admin(node, "/healthz/ready") {
                return Ok(Ok(()));
            }
            let n = self.nodes.iter_mut().find(|n| n.name == node);
            let exited = n.and_then(|n| n.agent.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            match exited {
                Some(status) => Ok(Err(anyhow::anyhow!(
                    "the agent on {node} exited ({status})"
                ))),
                None => Err("not ready yet"),
            }
        });
        outcome
            .and_then(|r| r)
            .with_context(|| format!("agent log:\n{}", self.agent_log(node)))
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

    /// Runs `mesh-agent uninstall` for a node: its capture goes.
    pub fn uninstall(&self, node: &str) -> Result<std::process::ExitStatus> {
        let status = std::process::Command::new(agent_binary()?)
            .arg("uninstall")
            .arg("--pin-dir")
            .arg(self.pin_dir().join(node))
            .status()
            .context("running mesh-agent uninstall")?;
        Ok(status)
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
        let what = format!("the agent on {node} to exit after SIGTERM");
        let exited = eventually(Duration::from_secs(10), &what, || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".to_owned()),
            Err(e) => Err(e.to_string()),
        });
        if exited.is_err() {
            let _ = child.kill();
        }
        exited
    }

    /// Process id of a node's agent (the shell execs nsenter, which execs the agent).
    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.node(node).agent.as_ref().map(Child::id)
    }

    /// Resident memory of a node's agent in KiB (VmRSS).
    pub fn agent_rss_kib(&self, node: &str) -> Option<u64> {
        self.agent_status_kib(node, "VmRSS:")
    }

    /// The most resident memory a node's agent has had, in KiB (VmHWM).
    pub fn agent_peak_kib(&self, node: &str) -> Option<u64> {
        self.agent_status_kib(node, "VmHWM:")
    }

    fn agent_status_kib(&self, node: &str, field: &str) -> Option<u64> {
        let pid = self.agent_pid(node)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
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
        let what = format!("{what} on {node}");
        eventually(timeout, &what, || match self.stats(node) {
            Ok(s) if cond(&s) => Ok(s),
            Ok(s) => Err(format!("stats: {s:#}")),
            Err(e) => Err(e.to_string()),
        })
        .with_context(|| format!("agent log:\n{}", self.agent_log(node)))
    }

    /// A counter of one workload on one node's agent (0 if absent).
    pub fn counter(&self, node: &str, workload: &str, name: &str) -> Result<u64> {
        let s = self.stats(node)?;
        Ok(s["workloads"][workload][name].as_u64().unwrap_or(0))
    }
}
