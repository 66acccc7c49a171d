//! Wiring of `mesh-agent run`: load eBPF, read the config, enrol, serve, reload.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use tokio::signal::unix::{signal, SignalKind};

use mesh_model::{
    ca::Ca,
    config,
    state::{State, StateHandle},
};

use crate::{
    admin,
    ebpf::{self, Kernel},
    enrol::Enroller,
    identity::{
        client::CaClient,
        manager::{CertManager, Signer},
    },
    inpod,
    metrics::Metrics,
    shared::Shared,
    source::{self, control_plane as cp, Update},
    tls,
};

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
    /// false: meshed destinations on other nodes get plaintext (measurements only).
    pub hbone: bool,
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

pub fn run(args: RunArgs) -> Result<(), Error> {
    inpod::init_home().map_err(Error::Runtime)?;
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve(args))
}

/// Loading parses the kernel's BTF (several MiB) and frees it again; hand those
/// pages back to the system so the agent's resident size reflects its steady state.
fn release_load_memory() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn serve(args: RunArgs) -> Result<(), Error> {
    let (cfg_tx, mut cfg_rx) = tokio::sync::mpsc::channel::<Update>(4);
    // A first config is required from a file: there is no last good one to fall
    // back on. From the control plane the agent waits for it (not ready meanwhile).
    let initial = match &args.config {
        ConfigSource::File(path) => {
            let objects = config::load(path)?;
            tokio::spawn(source::file(path.clone(), args.reload_interval, cfg_tx));
            Some(objects)
        }
        ConfigSource::ControlPlane => {
            let CaSource::Remote {
                address,
                root,
                token,
            } = &args.identity.ca
            else {
                return Err(Error::ControlPlaneNeedsCa);
            };
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
            };
            let source = cp::Source::new(address, &read(root)?, &args.node, &read(token)?)?;
            tokio::spawn(cp::run(source, cfg_tx));
            None
        }
    };
    // Everything that can fail goes before the attachments, which stay pinned.
    let (certs, roots) = cert_manager(&args.node, &args.identity)?;
    let mut listeners = Vec::new();
    for (addr, public) in [(args.admin, false), (args.metrics, true)] {
        let listener = admin::bind(addr)
            .await
            .map_err(|source| Error::Admin { addr, source })?;
        listeners.push((listener, public));
    }
    let (kernel, orig_dst, logger) = Kernel::load(&args.cgroup, &args.pin_dir)?;
    if let Some(logger) = logger {
        tokio::spawn(ebpf::forward_logs(logger));
    }
    tracing::info!(cgroup = %args.cgroup.display(), "eBPF programs attached");
    release_load_memory();
    let kernel = Arc::new(Mutex::new(kernel));
    kernel
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_excluded_ports(&args.excluded_ports)?;

    let metrics = Arc::new(Metrics::default());
    let state = StateHandle::default();
    let certs = Arc::new(certs);
    let shared = Arc::new(Shared::new(
        Some(orig_dst),
        state.clone(),
        args.identity.trust_domain.clone(),
        certs,
        roots,
        args.hbone,
    ));
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(10));
            loop {
                t.tick().await;
                shared.pool.expire_idle().await;
            }
        });
    }
    let ready = Arc::new(AtomicBool::new(false));
    let enrolled = Arc::new(Mutex::new(Vec::new()));
    let admin_state = admin::Admin {
        ready: ready.clone(),
        metrics: metrics.clone(),
        kernel: kernel.clone(),
        shared: shared.clone(),
        enrolled: enrolled.clone(),
        public: false,
    };
    for (listener, public) in listeners {
        tokio::spawn(admin::serve(
            listener,
            admin::Admin {
                public,
                ..admin_state.clone()
            },
        ));
    }

    let mut enroller = Enroller::new(
        args.node.clone(),
        kernel.clone(),
        shared.clone(),
        metrics.clone(),
    )
    .with_places(args.netns_places.clone());
    let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
    let objects = match initial {
        Some(o) => o,
        None => {
            tracing::info!("waiting for the first config from the control plane");
            loop {
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                    u = cfg_rx.recv() => match u {
                        Some(Update::Apply(version, o)) => {
                            tracing::info!(version, "first config from the control plane");
                            break *o;
                        }
                        Some(Update::Refused(version, e)) => {
                            metrics.config.errors.inc();
                            metrics.set_config_error(Some(e.clone()));
                            tracing::error!(version, "config from the control plane refused: {e}");
                        }
                        None => return Ok(()),
                    },
                }
            }
        }
    };
    let mut generation = 1;
    state.store(State::build(generation, objects));
    metrics.config.generation.inc();
    let apply = |enroller: &mut Enroller, state: &StateHandle| {
        for p in enroller.reconcile(&state.load()) {
            tracing::warn!("{p}");
        }
        *enrolled.lock().unwrap_or_else(|p| p.into_inner()) = enroller.enrolled();
    };
    apply(&mut enroller, &state);
    // Ready once the local pods' certificates are there (or after 10 s, saying so).
    for id in enroller.identities() {
        if shared
            .certs
            .wait(&id, Duration::from_secs(10))
            .await
            .is_none()
        {
            tracing::warn!(identity = %id, "no certificate yet; ready anyway, HBONE for it will wait");
        }
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(node = %args.node, admin = %args.admin, "agent ready");

    // Retry pods whose enrolment failed (e.g. netns not there yet).
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    loop {
        let update = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = retry.tick() => {
                apply(&mut enroller, &state);
                continue;
            }
            u = cfg_rx.recv() => match u {
                Some(u) => u,
                None => break,
            },
        };
        metrics.config.reloads.inc();
        match update {
            Update::Apply(version, objects) => {
                generation += 1;
                state.store(State::build(generation, *objects));
                metrics.config.generation.inc();
                metrics.set_config_error(None);
                tracing::info!(generation, source_version = version, "config reloaded");
                apply(&mut enroller, &state);
            }
            Update::Refused(version, e) => {
                metrics.config.errors.inc();
                tracing::error!(
                    source_version = version,
                    "config refused, the last good config stays in force: {e}"
                );
                metrics.set_config_error(Some(e));
            }
        }
    }
    tracing::info!("shutting down: unenrolling pods and detaching eBPF programs");
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    enroller.unenrol_all();
    drop(enroller);
    kernel.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
    drop(shared);
    drop(kernel);
    Ok(())
}
