//! Creating the lab: namespaces, links, addresses, routes and cgroups.
//!
//! Addressing: node n is 198.18.0.n / 2001:db8::n on the fabric bridge; its pods
//! are 198.19.n.j / 2001:db8:1:n::j (j from 10) behind the node's cbr0; Service k
//! is 198.18.100.k / 2001:db8:100::k. Nothing links to the root namespace.
use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::sys::{in_ns, ip, NS_PREFIX};

use super::core::Lab;
use super::spec::*;

/// `ip -n <ns> <words...>`: one command of the `ip` tool inside namespace `ns`.
fn ip_in(ns: &str, command: &str) -> Result<()> {
    let mut args = vec!["-n", ns];
    args.extend(command.split_whitespace());
    ip(&args).map(drop)
}

fn sysctls(ns: &str, settings: &[&str]) -> Result<()> {
    for s in settings {
        in_ns(ns, &["sysctl", "-qw", s])?;
    }
    Ok(())
}

impl Lab {
    pub(super) fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.agents_cgroup)
            .context("creating the lab cgroup (is cgroup v2 writable?)")?;
        self.add_fabric()?;
        for (i, name) in self.spec.nodes.clone().iter().enumerate() {
            self.add_node(i + 1, name)?;
        }
        self.add_node_routes()?;
        for spec in self.spec.pods.clone() {
            self.add_pod(spec)?;
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

    /// The fabric: the bridge between nodes, where the CA service listens.
    fn add_fabric(&self) -> Result<()> {
        let fab = &self.fabric;
        ip(&["netns", "add", fab])?;
        ip_in(fab, "link set lo up")?;
        ip_in(fab, "link add br0 type bridge")?;
        ip_in(fab, "link set br0 up")?;
        ip_in(fab, &format!("addr add {CA_IP}/24 dev br0"))
    }

    /// Node `n`: a namespace that forwards, eth0 on the fabric and cbr0 for its pods.
    fn add_node(&mut self, n: usize, name: &str) -> Result<()> {
        let ns = format!("{NS_PREFIX}{}-{name}", self.run);
        ip(&["netns", "add", &ns])?;
        let cgroup = self.cgroup_run.join(name);
        std::fs::create_dir_all(&cgroup)?;
        self.nodes.push(Node {
            name: name.to_string(),
            netns: ns.clone(),
            cgroup,
            agent: None,
            log: self.dir.join(format!("agent-{name}.log")),
        });
        sysctls(
            &ns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        ip_in(&ns, "link set lo up")?;
        let peer = format!("n{n}");
        ip_in(
            &ns,
            &format!(
                "link add eth0 type veth peer name {peer} netns {}",
                self.fabric
            ),
        )?;
        ip_in(&self.fabric, &format!("link set {peer} master br0 up"))?;
        ip_in(&ns, &format!("addr add 198.18.0.{n}/24 dev eth0"))?;
        ip_in(&ns, &format!("addr add 2001:db8::{n}/64 dev eth0 nodad"))?;
        ip_in(&ns, "link set eth0 up")?;
        ip_in(&ns, "link add cbr0 type bridge")?;
        ip_in(&ns, &format!("addr add 198.19.{n}.1/24 dev cbr0"))?;
        ip_in(
            &ns,
            &format!("addr add 2001:db8:1:{n}::1/64 dev cbr0 nodad"),
        )?;
        ip_in(&ns, "link set cbr0 up")
    }

    /// Every node reaches every other node's pods through that node; so does the
    /// fabric (IPv4 only), as a control plane reaches pods through the pod network.
    fn add_node_routes(&self) -> Result<()> {
        for (i, node) in self.nodes.iter().enumerate() {
            for m in (1..=self.nodes.len()).filter(|m| *m != i + 1) {
                ip_in(
                    &node.netns,
                    &format!("route add 198.19.{m}.0/24 via 198.18.0.{m}"),
                )?;
                ip_in(
                    &node.netns,
                    &format!("-6 route add 2001:db8:1:{m}::/64 via 2001:db8::{m}"),
                )?;
            }
        }
        for m in 1..=self.nodes.len() {
            ip_in(
                &self.fabric,
                &format!("route add 198.19.{m}.0/24 via 198.18.0.{m}"),
            )?;
        }
        Ok(())
    }

    /// A pod: its namespace and cgroup, a veth onto its node's cbr0, default routes.
    fn add_pod(&mut self, spec: PodSpec) -> Result<()> {
        let (i, node) = self
            .nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == spec.node)
            .with_context(|| format!("pod {} names unknown node {}", spec.name, spec.node))?;
        let n = i + 1;
        let j = 10
            + self
                .pods
                .iter()
                .filter(|p| p.spec.node == spec.node)
                .count();
        let ns = format!("{NS_PREFIX}{}-{}-{}", self.run, spec.namespace, spec.name);
        let node_ns = node.netns.clone();
        let cgroup = node
            .cgroup
            .join(format!("{}_{}", spec.namespace, spec.name));
        ip(&["netns", "add", &ns])?;
        std::fs::create_dir_all(&cgroup)?;
        sysctls(
            &ns,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        ip_in(&ns, "link set lo up")?;
        let host_if = format!("v{j}");
        ip_in(
            &node_ns,
            &format!("link add {host_if} type veth peer name eth0 netns {ns}"),
        )?;
        ip_in(&node_ns, &format!("link set {host_if} master cbr0 up"))?;
        let ip4: IpAddr = format!("198.19.{n}.{j}").parse()?;
        let ip6: IpAddr = format!("2001:db8:1:{n}::{j}").parse()?;
        ip_in(&ns, &format!("addr add {ip4}/24 dev eth0"))?;
        ip_in(&ns, &format!("addr add {ip6}/64 dev eth0 nodad"))?;
        ip_in(&ns, "link set eth0 up")?;
        ip_in(&ns, &format!("route add default via 198.19.{n}.1"))?;
        ip_in(&ns, &format!("-6 route add default via 2001:db8:1:{n}::1"))?;
        self.pods.push(Pod {
            spec,
            netns: ns,
            cgroup,
            ip4,
            ip6,
        });
        Ok(())
    }
}
