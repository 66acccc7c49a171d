//! Cluster mode: finding a pod's network namespace from its addresses, as the
//! Kubernetes source does not carry it. Container runtimes pin each pod's netns as a
//! file (containerd and CRI-O under /var/run/netns); processes show theirs under
//! /proc/<pid>/ns/net. Each candidate is entered briefly and its addresses read.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use super::{Return, HOME};

/// Where to look: directories of pinned namespaces, and /proc or not.
#[derive(Debug, Clone)]
pub struct Places {
    pub dirs: Vec<PathBuf>,
    pub proc: bool,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            dirs: vec!["/var/run/netns".into(), "/run/netns".into()],
            proc: true,
        }
    }
}

fn candidates(places: &Places) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in &places.dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut v: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
            v.sort();
            out.extend(v);
        }
    }
    if places.proc {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            out.extend(
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .map(|e| e.path().join("ns/net")),
            );
        }
    }
    out
}

/// The addresses (not loopback) of the namespace at `path`.
fn addresses(path: &Path) -> Option<Vec<IpAddr>> {
    let f = File::open(path).ok()?;
    if HOME.get().is_none() {
        super::init_home().ok()?;
    }
    setns(&f, CloneFlags::CLONE_NEWNET).ok()?;
    let _back = Return;
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    Some(
        addrs
            .filter_map(|a| {
                let s = a.address?;
                if let Some(v4) = s.as_sockaddr_in() {
                    return Some(IpAddr::V4(v4.ip()));
                }
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            })
            .filter(|ip| !ip.is_loopback())
            .collect(),
    )
}

/// Where an address was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// In exactly one network namespace (this file names it).
    At(PathBuf),
    /// In more than one: a pod may be holding another's address, so neither is
    /// trusted with that address's identity.
    Ambiguous(Vec<PathBuf>),
}

/// Pod address -> the file of its network namespace. The agent's own namespace is
/// skipped; a namespace seen under several names counts once (pinned files are
/// looked at before /proc).
pub fn scan(places: &Places) -> HashMap<IpAddr, Found> {
    let own = std::fs::metadata("/proc/self/ns/net")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let mut seen = HashSet::new();
    let mut found = HashMap::new();
    for path in candidates(places) {
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let id = (m.dev(), m.ino());
        if Some(id) == own || !seen.insert(id) {
            continue;
        }
        for ip in addresses(&path).unwrap_or_default() {
            found
                .entry(ip)
                .and_modify(|f| {
                    if let Found::At(first) = f {
                        *f = Found::Ambiguous(vec![first.clone(), path.clone()]);
                    } else if let Found::Ambiguous(all) = f {
                        all.push(path.clone());
                    }
                })
                .or_insert_with(|| Found::At(path.clone()));
        }
    }
    found
}
