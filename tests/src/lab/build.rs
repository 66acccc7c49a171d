//! Creating the lab: namespaces, links, addresses, routes and cgroups.
use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::sys::{in_ns, ip, NS_PREFIX};

use super::core::Lab;
use super::spec::*;

impl Lab {
    pub(super) fn build(&mut self) -> Result<()> {
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
}
