//! Programs in pods: lab-app, lab-http, curl, the standalone waypoint.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{app::App, netns};

use super::core::Lab;
use super::spec::*;
use crate::eventually::eventually;

impl Lab {
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
        let what = format!("waypoint {pod} to be ready");
        let admin: std::net::SocketAddr = "127.0.0.1:15020".parse()?;
        let outcome = eventually(Duration::from_secs(20), &what, || {
            if let Ok((200, _)) = netns::http_get(&w.netns, admin, "/healthz/ready") {
                return Ok(Ok(()));
            }
            match w.child.try_wait() {
                Ok(Some(status)) => Ok(Err(anyhow::anyhow!("waypoint {pod} exited ({status})"))),
                _ => Err("not ready yet"),
            }
        });
        outcome
            .and_then(|r| r)
            .with_context(|| format!("waypoint log:\n{}", w.log_text()))?;
        Ok(w)
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
