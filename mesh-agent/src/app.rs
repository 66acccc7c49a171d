//! Wiring of `mesh-agent run`: load eBPF, read the config, enrol, serve, reload.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mesh_model::{ca::Ca, config};

use crate::{
    ebpf,
    identity::{
        client::CaClient,
        manager::{CertManager, Signer},
    },
    inpod,
    source::control_plane as cp,
    tls,
};

mod serve;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("{0}")]
    Ebpf(#[from] ebpf::Error),
    #[error("cannot bind the admin endpoint {addr}: {source}; is another agent running?")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(String),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("config from the control plane needs --ca-address, --ca-root and --ca-token-file (it is served with the CA)")]
    ControlPlaneNeedsCa,
    #[error("{0}")]
    Control(#[from] cp::Error),
}

/// Where the agent's config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A local file, reloaded when it changes.
    File(PathBuf),
    /// The control plane's config stream (same address, root and token as the CA).
    ControlPlane,
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub config: ConfigSource,
    pub node: String,
    pub cgroup: PathBuf,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// bpffs directory for this node's pinned attachments.
    pub pin_dir: PathBuf,
    pub excluded_ports: Vec<u16>,
    pub reload_interval: Duration,
    pub worker_threads: usize,
    /// How meshed destinations on other nodes are reached.
    pub tunnel: crate::datapath::Tunnel,
    pub identity: IdentityArgs,
    /// Where pods' network namespaces are found when the config has none.
    pub netns_places: crate::inpod::discover::Places,
}

/// Where certificates come from.
#[derive(Debug, Clone)]
pub struct IdentityArgs {
    pub trust_domain: String,
    pub cert_ttl: Duration,
    pub ca: CaSource,
}

#[derive(Debug, Clone)]
pub enum CaSource {
    /// An in-process CA with its root in this directory (single node).
    Local { dir: PathBuf },
    /// The CA service: address, trust bundle file, this node's bootstrap token file.
    Remote {
        address: String,
        root: PathBuf,
        token: PathBuf,
    },
}

pub(crate) fn cert_manager(
    node: &str,
    args: &IdentityArgs,
) -> Result<(CertManager, Arc<rustls::RootCertStore>), Error> {
    match &args.ca {
        CaSource::Local { dir } => {
            let ca = Arc::new(
                Ca::load_or_create(dir, &args.trust_domain)
                    .map_err(|e| Error::Identity(e.to_string()))?,
            );
            let roots =
                tls::roots_from_pem(ca.root_pem()).map_err(|e| Error::Identity(e.to_string()))?;
            Ok((CertManager::new(Signer::Local(ca), args.cert_ttl), roots))
        }
        CaSource::Remote {
            address,
            root,
            token,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
            };
            let root_pem = read(root)?;
            let token = read(token)?;
            let roots =
                tls::roots_from_pem(&root_pem).map_err(|e| Error::Identity(e.to_string()))?;
            let client = CaClient::new(address, &root_pem, node, &token)
                .map_err(|e| Error::Identity(e.to_string()))?;
            Ok((
                CertManager::new(Signer::Remote(Box::new(client)), args.cert_ttl),
                roots,
            ))
        }
    }
}

/// A node proxy holds a socket or two per connection: lift the soft limit on open
/// files to the hard one.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::warn!("cannot raise the open-files limit from {soft} to {hard}");
        }
    }
}

/// glibc's allocator, tuned for a long-running proxy whose config versions come and
/// go (measured with 6,000 objects: resident size went from 52 to about 24 MiB):
/// - every thread that allocates gets an arena of its own, and memory freed in one
///   is not reused by the others; one arena (with glibc's per-thread caches in
///   front of it) keeps freed memory reusable by every thread;
/// - the mmap threshold is dynamic by default: once a large block is freed, blocks
///   up to that size come from the heap and fragment it. A fixed threshold sends
///   large, short-lived blocks (config messages, indexes) to mmap, which returns
///   them to the system when freed.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator tuning; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// The allocator's view of the heap (bytes): in use, free in the heap, mmapped.
pub fn heap() -> serde_json::Value {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    serde_json::json!({"in_use": m.uordblks, "free": m.fordblks, "mmapped": m.hblkhd, "arena": m.arena})
}

pub fn run(args: RunArgs) -> Result<(), Error> {
    tune_malloc();
    inpod::init_home().map_err(Error::Runtime)?;
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve::serve(args))
}
