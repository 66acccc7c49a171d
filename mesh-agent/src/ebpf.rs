//! Loading and attaching the kernel programs; the ONLY code that writes kernel maps.
use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, SockHash},
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupSockAddr, ProgramError, SkLookup, SockOps,
    },
    Ebpf, EbpfError,
};
use mesh_common::{counters, maps, programs, EnrolledNetns, IpWords, OrigDstKey, SockAddr};

pub mod fast;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh"));

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF object failed: {0}; the kernel needs BTF (/sys/kernel/btf/vmlinux) and the agent needs CAP_BPF/CAP_SYS_ADMIN")]
    Load(#[from] EbpfError),
    #[error("eBPF program {name} is missing from the object; rebuild with `cargo xtask build`")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object; rebuild with `cargo xtask build`")]
    MissingMap { name: &'static str },
    #[error("eBPF program {name}: {source}{}", source_chain(source))]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("eBPF map {name}: {source}{}", source_chain(source))]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("bpffs {path}: {source}; the agent pins its attachments there (--pin-dir)")]
    Pin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("eBPF program {name}: cannot take its link: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("{0}")]
    Fast(#[from] fast::Error),
    #[error("cannot open cgroup {path}: {source}; is cgroup v2 mounted there?")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The causes below an error, as ": cause: cause".
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { name, source }
}
fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Program { name, source }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there (it is not by default on
/// some hosts); `pin_dir` must be below a bpffs mount.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    // f_type is a c_long on x86_64 and narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let is_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
            .unwrap_or(false)
    };
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| Error::Pin {
            path: root.to_owned(),
            source: e.into(),
        })?;
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| Error::Pin {
        path: pin_dir.to_owned(),
        source,
    })
}

fn pin(link: FdLink, path: &Path) -> Result<PinnedLink, Error> {
    let _ = std::fs::remove_file(path);
    link.pin(path).map_err(|e| Error::Pin {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Unpins and so detaches (the FdLink is dropped).
fn unpin(link: PinnedLink) {
    if let Err(e) = link.unpin() {
        tracing::warn!("cannot unpin an eBPF link: {e}");
    }
}

/// Removes what earlier (dead) agents of this node left pinned: their programs
/// detach. Called once this agent's programs are attached.
/// Maps every agent generation on the node shares: pinned in `<pin dir>/maps-v1`
/// (the version names their layout), so a successor's programs see the
/// enrolments, listeners and original destinations of the one before it, and old
/// and new programs agree while both are attached.
const SHARED_MAPS: [&str; 11] = [
    maps::FAST_SOCKS,
    maps::FAST_DECIDED,
    maps::FAST_ON,
    maps::FAST_COUNTERS,
    maps::ENROLLED_NETNS,
    maps::PENDING_CONNECT,
    maps::ORIG_DST,
    maps::EXCLUDED_PORTS,
    maps::INBOUND_LISTENERS,
    maps::ENROLLED_ADDRS,
    maps::COUNTERS,
];
const MAPS_DIR: &str = "maps-v1";

/// Removes the attachments earlier agents pinned (not the shared maps).
fn remove_stale_pins(pin_dir: &Path, ours: &Path) {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.path() != ours && e.file_name() != MAPS_DIR {
            tracing::info!(dir = %e.path().display(), "removing eBPF attachments left by a previous agent");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A program of the object, as its type, or an error naming it.
fn program<'a, T>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    bpf.program_mut(name)
        .ok_or(Error::MissingProgram { name })?
        .try_into()
        .map_err(prog_err(name))
}

/// Read-only view of the original destinations, for the data path (no lock).
pub struct OrigDst(HashMap<MapData, OrigDstKey, SockAddr>);

impl OrigDst {
    pub fn get(&self, netns_cookie: u64, client: SocketAddr) -> Option<SocketAddr> {
        let key = OrigDstKey {
            netns_cookie,
            ip: ip_words(client.ip()),
            port: u32::from(client.port()),
            _reserved: 0,
        };
        let v = self.0.get(&key, 0).ok()?;
        Some(SocketAddr::new(
            ip_from_words(&v.ip, v.family == mesh_common::AF_INET),
            v.port,
        ))
    }
    pub fn len(&self) -> usize {
        self.0.keys().filter(Result::is_ok).count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn ip_words(ip: IpAddr) -> IpWords {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpWords::from_v4_octets(v4.octets()),
        IpAddr::V6(v6) => IpWords::from_v6_octets(v6.octets()),
    }
}

fn ip_from_words(w: &IpWords, v4: bool) -> IpAddr {
    let o = w.octets();
    if v4 && w.is_v4_mapped() {
        IpAddr::from([o[12], o[13], o[14], o[15]])
    } else {
        IpAddr::from(o)
    }
}

/// The programs, attached, and the maps the agent writes.
///
/// Every attachment and map is pinned in bpffs: when the agent stops (SIGTERM,
/// crash, kill -9) capture stays in place and enrolled pods fail closed
/// (connections are refused, never sent around the mesh) until an agent serves
/// them. The next agent shares the maps, attaches its own programs beside the old
/// ones, enrols its pods, and only then removes what the previous one pinned
/// (`release_previous`). Only `uninstall` removes capture.
pub struct Kernel {
    bpf: Ebpf,
    pin_dir: PathBuf,
    pins: PathBuf,
    /// Held for the agent's life (pinned: they outlive it).
    _cgroup_links: Vec<PinnedLink>,
    enrolled: HashMap<MapData, u64, EnrolledNetns>,
    enrolled_addrs: HashMap<MapData, IpWords, u32>,
    listeners: SockHash<MapData, IpWords>,
    excluded: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    fast: fast::FastPath,
    lookups: StdHashMap<u64, PinnedLink>,
}

impl Kernel {
    /// Loads the object and attaches connect4/connect6/sockops to `cgroup` (and
    /// sk_msg to the fast path's sockhash when `fast_path` is on).
    pub fn load(
        cgroup: &Path,
        pin_dir: &Path,
        fast_path: fast::Mode,
    ) -> Result<(Kernel, OrigDst, Option<Logger>), Error> {
        ensure_bpffs(pin_dir)?;
        let maps_dir = pin_dir.join(MAPS_DIR);
        std::fs::create_dir_all(&maps_dir).map_err(|source| Error::Pin {
            path: maps_dir.clone(),
            source,
        })?;
        // aya parses the kernel's BTF here, eagerly (~20 MB held for the load: the
        // agent's start-up peak; aya 0.14 has no loader without it).
        let mut loader = aya::EbpfLoader::new();
        for name in SHARED_MAPS {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        let mut bpf = loader.load(OBJECT)?;
        let pins = pin_dir.join(std::process::id().to_string());
        std::fs::create_dir_all(&pins).map_err(|source| Error::Pin {
            path: pins.clone(),
            source,
        })?;
        let logger = match aya_log::EbpfLogger::init(&mut bpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("eBPF program logs are not forwarded: {e}");
                None
            }
        };
        // Before sockops is attached, so that every socket it puts in the sockhash
        // finds the sk_msg program there.
        let fast = fast::set_up(&mut bpf, fast_path)?;
        let cg = File::open(cgroup).map_err(|source| Error::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        let mut cgroup_links = Vec::new();
        for name in [programs::CONNECT4, programs::CONNECT6] {
            let p: &mut CgroupSockAddr = program(&mut bpf, name)?;
            p.load().map_err(prog_err(name))?;
            let id = p
                .attach(&cg, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
            let link = FdLink::try_from(p.take_link(id).map_err(prog_err(name))?)
                .map_err(|e| Error::Link { name, source: e })?;
            cgroup_links.push(pin(link, &pins.join(name))?);
        }
        let name = programs::SOCKOPS;
        let p: &mut SockOps = program(&mut bpf, name)?;
        p.load().map_err(prog_err(name))?;
        let id = p
            .attach(&cg, CgroupAttachMode::Single)
            .map_err(prog_err(name))?;
        let link = FdLink::try_from(p.take_link(id).map_err(prog_err(name))?)
            .map_err(|e| Error::Link { name, source: e })?;
        cgroup_links.push(pin(link, &pins.join(name))?);
        let p: &mut SkLookup = program(&mut bpf, programs::SK_LOOKUP)?;
        p.load().map_err(prog_err(programs::SK_LOOKUP))?;
        let take = |bpf: &mut Ebpf, name: &'static str| {
            bpf.take_map(name).ok_or(Error::MissingMap { name })
        };
        let enrolled = HashMap::try_from(take(&mut bpf, maps::ENROLLED_NETNS)?)
            .map_err(map_err(maps::ENROLLED_NETNS))?;
        let orig =
            HashMap::try_from(take(&mut bpf, maps::ORIG_DST)?).map_err(map_err(maps::ORIG_DST))?;
        let enrolled_addrs = HashMap::try_from(take(&mut bpf, maps::ENROLLED_ADDRS)?)
            .map_err(map_err(maps::ENROLLED_ADDRS))?;
        let listeners = SockHash::try_from(take(&mut bpf, maps::INBOUND_LISTENERS)?)
            .map_err(map_err(maps::INBOUND_LISTENERS))?;
        let excluded = HashMap::try_from(take(&mut bpf, maps::EXCLUDED_PORTS)?)
            .map_err(map_err(maps::EXCLUDED_PORTS))?;
        let counters = PerCpuArray::try_from(take(&mut bpf, maps::COUNTERS)?)
            .map_err(map_err(maps::COUNTERS))?;
        Ok((
            Kernel {
                bpf,
                pin_dir: pin_dir.to_owned(),
                pins,
                _cgroup_links: cgroup_links,
                enrolled,
                enrolled_addrs,
                listeners,
                excluded,
                counters,
                fast,
                lookups: StdHashMap::new(),
            },
            OrigDst(orig),
            logger,
        ))
    }

    pub fn set_excluded_ports(&mut self, ports: &[u16]) -> Result<(), Error> {
        let old: Vec<u32> = self.excluded.keys().filter_map(Result::ok).collect();
        for p in old {
            if !ports.contains(&(p as u16)) {
                self.excluded
                    .remove(&p)
                    .map_err(map_err(maps::EXCLUDED_PORTS))?;
            }
        }
        for p in ports {
            self.excluded
                .insert(u32::from(*p), 1, 0)
                .map_err(map_err(maps::EXCLUDED_PORTS))?;
        }
        Ok(())
    }

    /// Inbound first (listener + sk_lookup), then outbound capture (the netns entry),
    /// so a captured connect() always finds its listener. `fast_path`: the pod's
    /// annotation asks for the loopback fast path.
    pub fn enrol(
        &mut self,
        netns: &crate::inpod::Netns,
        addresses: &[IpAddr],
        inbound: &impl AsRawFd,
        fast_path: bool,
    ) -> Result<(), Error> {
        for a in addresses {
            self.listeners
                .insert(ip_words(*a), inbound.as_raw_fd(), 0)
                .map_err(map_err(maps::INBOUND_LISTENERS))?;
        }
        let flags = self.fast.flags(fast_path);
        self.capture(netns, addresses, flags)
    }

    /// A pod whose enrolment failed: inbound to its addresses is dropped (no
    /// listener) and its connect()s beyond loopback are refused, until `enrol`.
    pub fn block(
        &mut self,
        netns: &crate::inpod::Netns,
        addresses: &[IpAddr],
    ) -> Result<(), Error> {
        for a in addresses {
            let _ = self.listeners.remove(&ip_words(*a));
        }
        self.capture(netns, addresses, mesh_common::ENROLLED_BLOCKED)
    }

    /// sk_lookup on the netns, its addresses and its entry (with `flags`).
    fn capture(
        &mut self,
        netns: &crate::inpod::Netns,
        addresses: &[IpAddr],
        flags: u32,
    ) -> Result<(), Error> {
        let name = programs::SK_LOOKUP;
        let p: &mut SkLookup = program(&mut self.bpf, name)?;
        if let std::collections::hash_map::Entry::Vacant(e) = self.lookups.entry(netns.cookie()) {
            let id = p.attach(netns.fd()).map_err(prog_err(name))?;
            let link = FdLink::from(p.take_link(id).map_err(prog_err(name))?);
            e.insert(pin(
                link,
                &self.pins.join(format!("lookup-{}", netns.cookie())),
            )?);
        }
        for a in addresses {
            self.enrolled_addrs
                .insert(ip_words(*a), 1, 0)
                .map_err(map_err(maps::ENROLLED_ADDRS))?;
        }
        let mut value = EnrolledNetns {
            flags,
            ..EnrolledNetns::default()
        };
        for a in addresses {
            if a.is_ipv4() {
                value.pod_ip4 = ip_words(*a);
            } else {
                value.pod_ip6 = ip_words(*a);
            }
        }
        self.enrolled
            .insert(netns.cookie(), value, 0)
            .map_err(map_err(maps::ENROLLED_NETNS))
    }

    /// Outbound capture stops first, then inbound. Established connections are not
    /// touched: they never pass through these maps again.
    pub fn unenrol(&mut self, cookie: u64, addresses: &[IpAddr]) -> Result<(), Error> {
        let _ = self.enrolled.remove(&cookie);
        if let Some(link) = self.lookups.remove(&cookie) {
            unpin(link);
        }
        for a in addresses {
            let _ = self.enrolled_addrs.remove(&ip_words(*a));
            let _ = self.listeners.remove(&ip_words(*a));
        }
        Ok(())
    }

    /// Once this agent's programs are attached and its pods enrolled: detaches what
    /// earlier agents pinned, and forgets enrolments of netns and addresses that
    /// are not this agent's (pods that left while no agent ran).
    pub fn release_previous(&mut self) {
        remove_stale_pins(&self.pin_dir, &self.pins);
        let stale: Vec<u64> = self
            .enrolled
            .keys()
            .filter_map(Result::ok)
            .filter(|c| !self.lookups.contains_key(c))
            .collect();
        for c in stale {
            let _ = self.enrolled.remove(&c);
        }
        let mut ours: Vec<IpWords> = Vec::new();
        for c in self.lookups.keys() {
            if let Ok(e) = self.enrolled.get(c, 0) {
                ours.extend([e.pod_ip4, e.pod_ip6]);
            }
        }
        let stale: Vec<IpWords> = self
            .enrolled_addrs
            .keys()
            .filter_map(Result::ok)
            .filter(|a| !ours.contains(a))
            .collect();
        for a in stale {
            let _ = self.enrolled_addrs.remove(&a);
        }
    }

    pub fn enrolled_count(&self) -> usize {
        self.enrolled.keys().filter(Result::is_ok).count()
    }

    /// Kernel-side counters, summed over CPUs (the fast path's after capture's).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<(&'static str, u64)> = (0..counters::COUNT)
            .map(|i| {
                let v = self
                    .counters
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (counters::NAMES[i as usize], v)
            })
            .collect();
        all.extend(self.fast.counters());
        all
    }

    /// Whether the loopback fast path runs.
    pub fn fast_path_active(&self) -> bool {
        self.fast.active
    }
}

/// Removes capture from the node: every attachment and shared map under `pin_dir`
/// (`mesh-agent uninstall`). Pods are then reached directly, outside the mesh.
pub fn uninstall(pin_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Shared owner of the kernel state: the config reconciler writes through it.
pub type KernelHandle = std::sync::Arc<Mutex<Kernel>>;

/// Forwards the programs' aya-log records to the agent's log.
pub type Logger = aya_log::EbpfLogger<&'static dyn log::Log>;

pub async fn forward_logs(logger: Logger) {
    // SAFETY: the logger owns its ring-buffer fd and moves into the AsyncFd, so the fd
    // stays open for as long as it is registered.
    let Ok(mut fd) = (unsafe { tokio::io::unix::AsyncFd::register(logger) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
