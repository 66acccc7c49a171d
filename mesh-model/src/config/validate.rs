//! Checks of the objects as a set that serde cannot make: names and addresses used
//! twice, address families, ports. What the objects mean (policies, routes) is
//! checked when they are compiled (`state::State::compile`).
use std::{collections::HashSet, net::IpAddr};

use super::error::Error;
use crate::model::{Objects, Service, Workload};

struct Checker<'a> {
    path: &'a str,
    ips: HashSet<IpAddr>,
}

impl Checker<'_> {
    fn invalid(&self, kind: &'static str, name: &str, message: String) -> Error {
        Error::Invalid {
            path: self.path.to_owned(),
            kind,
            name: name.to_owned(),
            message,
        }
    }

    fn workload(&mut self, w: &Workload, name: impl Fn() -> String) -> Result<(), Error> {
        let v4 = w.spec.addresses.iter().filter(|a| a.is_ipv4()).count();
        let v6 = w.spec.addresses.len() - v4;
        if w.spec.addresses.is_empty() || v4 > 1 || v6 > 1 {
            return Err(self.invalid(
                "Workload",
                &name(),
                "spec.addresses must hold one IPv4 and/or one IPv6 address".into(),
            ));
        }
        for a in &w.spec.addresses {
            if !self.ips.insert(*a) {
                return Err(self.invalid(
                    "Workload",
                    &name(),
                    format!("spec.addresses: {a} is already used by another workload"),
                ));
            }
        }
        Ok(())
    }

    fn service(&mut self, s: &Service, name: impl Fn() -> String) -> Result<(), Error> {
        for ip in &s.spec.cluster_ips {
            if !self.ips.insert(*ip) {
                return Err(self.invalid(
                    "Service",
                    &name(),
                    format!("spec.clusterIPs: {ip} is already used by another object"),
                ));
            }
        }
        for (i, p) in s.spec.ports.iter().enumerate() {
            if p.port == 0 || p.target_port == Some(0) {
                return Err(self.invalid(
                    "Service",
                    &name(),
                    format!("spec.ports[{i}]: port 0 is not a valid port"),
                ));
            }
            if p.protocol != "TCP" {
                return Err(self.invalid(
                    "Service",
                    &name(),
                    format!(
                        "spec.ports[{i}].protocol: {:?} is not supported; only TCP",
                        p.protocol
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn objects(path: &str, o: &Objects) -> Result<(), Error> {
    let mut c = Checker {
        path,
        ips: HashSet::new(),
    };
    let mut names = HashSet::with_capacity(o.workloads.len());
    for w in &o.workloads {
        let m = &w.metadata;
        let name = || format!("{}/{}", m.namespace(), m.name);
        if !names.insert((m.namespace(), m.name.as_str())) {
            return Err(c.invalid("Workload", &name(), "defined twice".into()));
        }
        c.workload(w, name)?;
    }
    let mut names = HashSet::with_capacity(o.services.len());
    for s in &o.services {
        let m = &s.metadata;
        let name = || format!("{}/{}", m.namespace(), m.name);
        if !names.insert((m.namespace(), m.name.as_str())) {
            return Err(c.invalid("Service", &name(), "defined twice".into()));
        }
        c.service(s, name)?;
    }
    if let Some(extra) = o.mesh_configs.get(1) {
        let message = "a config holds at most one MeshConfig".into();
        return Err(c.invalid("MeshConfig", &extra.metadata.name, message));
    }
    for m in &o.mesh_configs {
        if m.spec.root_namespace.is_empty() {
            let message = "spec.rootNamespace must not be empty".into();
            return Err(c.invalid("MeshConfig", &m.metadata.name, message));
        }
    }
    Ok(())
}
