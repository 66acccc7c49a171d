//! `mesh-agent run`, step by step: the config source, certificates, listeners, the
//! eBPF attachments, the data path, then the loop that applies each new config.
use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};

use mesh_model::state::{State, StateHandle};

use super::{
    args::{cert_manager, CaSource, ConfigSource, Error, RunArgs},
    inputs::data_path,
};
use crate::{
    admin,
    datapath::DataPath,
    ebpf::{self, Kernel, KernelHandle},
    enrol::Enroller,
    metrics::Metrics,
    source::{self, control_plane as cp, Compiler, Update},
};

fn read(p: &PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(p)
        .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
}

/// Starts the config source. A file gives the first config now (there is no last
/// good one to fall back on); the control plane's arrives later.
fn start_source(
    args: &RunArgs,
    compiler: &Compiler,
    tx: mpsc::Sender<Update>,
) -> Result<Option<State>, Error> {
    match &args.config {
        ConfigSource::File(path) => {
            let first = compiler.load(path)?;
            let c = compiler.clone();
            tokio::spawn(source::file(path.clone(), args.reload_interval, c, tx));
            Ok(Some(first))
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
            let source = cp::Source::new(address, &read(root)?, &args.node, &read(token)?)?;
            tokio::spawn(cp::run(source, compiler.clone(), tx));
            Ok(None)
        }
    }
}

/// The admin and metrics listeners: handed over by the agent this one replaces,
/// else bound.
async fn bind_admin(
    args: &RunArgs,
    inherited: Vec<std::net::TcpListener>,
) -> Result<Vec<(TcpListener, bool)>, Error> {
    let mut listeners = Vec::new();
    let mut inherited = inherited.into_iter();
    for (addr, public) in [(args.admin, false), (args.metrics, true)] {
        let from_std = |l: std::net::TcpListener| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        let listener = match inherited.next() {
            Some(l) => from_std(l),
            None => admin::bind(addr).await,
        }
        .map_err(|source| Error::Admin { addr, source })?;
        listeners.push((listener, public));
    }
    Ok(listeners)
}

/// Attaches the capture programs (they stay pinned from here on).
fn attach(args: &RunArgs) -> Result<(KernelHandle, ebpf::OrigDst), Error> {
    let (mut kernel, orig_dst, logger) = Kernel::load(&args.cgroup, &args.pin_dir, args.fast_path)?;
    if let Some(logger) = logger {
        tokio::spawn(ebpf::forward_logs(logger));
    }
    tracing::info!(cgroup = %args.cgroup.display(), "eBPF programs attached");
    super::memory::release_free_memory();
    kernel.set_excluded_ports(&args.excluded_ports)?;
    Ok((Arc::new(Mutex::new(kernel)), orig_dst))
}

fn spawn_pool_expiry(dp: &DataPath) {
    let inputs = dp.inputs.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(10));
        loop {
            t.tick().await;
            inputs.pool.expire_idle().await;
        }
    });
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(Error::Runtime)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Runtime)?,
        })
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Waits for the control plane's first good config; None when told to stop.
async fn first_config(
    updates: &mut mpsc::Receiver<Update>,
    signals: &mut Signals,
    metrics: &Metrics,
) -> Option<State> {
    tracing::info!("waiting for the first config from the control plane");
    loop {
        tokio::select! {
            _ = signals.stop() => return None,
            u = updates.recv() => match u? {
                Update::Apply(version, s) => {
                    tracing::info!(version, "first config from the control plane");
                    return Some(*s);
                }
                Update::Refused(version, e) => {
                    tracing::error!(version, "config from the control plane refused: {e}");
                    metrics.set_config_error(Some(e.clone()));
                    metrics.config.errors.inc();
                }
            },
        }
    }
}

/// The admin and metrics servers, as tasks (aborted when a successor takes over).
fn spawn_admin(
    listeners: Vec<(TcpListener, bool)>,
    base: &admin::Admin,
) -> Vec<tokio::task::JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|(listener, public)| {
            let a = admin::Admin {
                public,
                ..base.clone()
            };
            tokio::spawn(admin::serve(listener, a))
        })
        .collect()
}

/// The config to start from: the file's; else the one persisted from the control
/// plane; else the control plane's first (persisted). None: told to stop first.
async fn first_state(
    args: &RunArgs,
    initial: Option<State>,
    (updates, signals): (&mut mpsc::Receiver<Update>, &mut Signals),
    metrics: &Metrics,
) -> Option<State> {
    let persisted = || {
        let s = super::persist::load(&args.state_dir)?;
        tracing::info!(dir = %args.state_dir.display(), "starting from the last good config from the control plane; its stream replaces it when it answers");
        Some(s)
    };
    if let Some(s) = initial.or_else(persisted) {
        return Some(s);
    }
    let s = first_config(updates, signals, metrics).await?;
    persist(args, &s);
    Some(s)
}

/// The agent after attaching: what the loop needs.
struct Agent {
    state: StateHandle,
    metrics: Arc<Metrics>,
    enroller: Enroller,
    enrolled: Arc<Mutex<Vec<String>>>,
    dp: DataPath,
    /// Where each config from the control plane is kept (None: file mode).
    persist_to: Option<std::path::PathBuf>,
}

/// Keeps a control plane's config on disk (file mode has its file).
fn persist(args: &RunArgs, s: &State) {
    if matches!(args.config, ConfigSource::ControlPlane) {
        if let Err(e) = super::persist::save(&args.state_dir, &s.objects) {
            tracing::warn!(dir = %args.state_dir.display(), "the config is not persisted: {e}");
        }
    }
}

impl Agent {
    fn reconcile(&mut self) {
        for p in self.enroller.reconcile(&self.state.load()) {
            tracing::warn!("{p}");
        }
        *self.enrolled.lock().unwrap_or_else(|p| p.into_inner()) = self.enroller.enrolled();
    }

    fn apply(&mut self, update: Update) {
        let m = &self.metrics;
        m.config.reloads.inc();
        match update {
            Update::Apply(version, s) => {
                let generation = s.generation;
                if let Some(dir) = &self.persist_to {
                    if let Err(e) = super::persist::save(dir, &s.objects) {
                        tracing::warn!(dir = %dir.display(), "the config is not persisted: {e}");
                    }
                }
                m.config.degraded.set(s.fail_closed().count() as i64);
                self.state.store(*s);
                m.config.applied();
                super::memory::release_free_memory();
                m.set_config_error(None);
                tracing::info!(generation, source_version = version, "config reloaded");
                self.reconcile();
                self.evict_departed();
                // Policy may have changed: what it no longer allows is closed.
                let inputs = &self.dp.inputs;
                let closed = self
                    .dp
                    .established
                    .recheck(|pod, identity, ip, target, judging| {
                        let caller = crate::enforce::Caller { identity, ip };
                        crate::enforce::allowed(inputs, pod, caller, target, judging)
                    });
                if closed > 0 {
                    tracing::info!(closed, "established connections closed by the new policy");
                }
            }
            Update::Refused(version, e) => {
                tracing::error!(
                    source_version = version,
                    "config refused, the last good config stays in force: {e}"
                );
                // The reason before the count: whoever sees the count sees why.
                m.set_config_error(Some(e));
                m.config.errors.inc();
            }
        }
    }

    /// Applies updates, and retries pods whose enrolment failed (e.g. netns not
    /// there yet), until told to stop or a successor took the listeners.
    async fn run(
        &mut self,
        updates: &mut mpsc::Receiver<Update>,
        signals: &mut Signals,
        (handed, cni): (
            &mut mpsc::Receiver<usize>,
            &mut mpsc::Receiver<crate::cni::Asked>,
        ),
    ) -> End {
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = signals.stop() => return End::Stopped,
                Some(n) = handed.recv() => {
                    tracing::info!(pods = n, "a new agent took over this node's listeners; draining");
                    return End::HandedOver;
                }
                Some((req, reply)) = cni.recv() => {
                    let _ = reply.send(self.cni(&req));
                }
                _ = retry.tick() => self.reconcile(),
                u = updates.recv() => match u {
                    Some(u) => self.apply(u),
                    None => return End::Stopped,
                },
            }
        }
    }
}

impl Agent {
    /// Pooled HBONE connections to addresses whose workload left or is another
    /// identity now are dropped: no new stream goes to them.
    fn evict_departed(&self) {
        let state = self.dp.inputs.state.load();
        let inputs = &self.dp.inputs;
        let evicted = inputs.pool.evict(|k| {
            state
                .workloads_by_ip
                .get(&k.address)
                .is_some_and(|w| inputs.identity_of(w) == k.destination)
        });
        if evicted > 0 {
            tracing::info!(
                evicted,
                "pooled HBONE connections to departed workloads dropped"
            );
        }
    }

    /// A CNI plugin's ADD or DEL for a new pod's namespace.
    fn cni(&mut self, r: &crate::cni::Request) -> crate::cni::Reply {
        use crate::cni::{Command, Reply};
        let pod = format!("{}/{}", r.namespace, r.pod);
        match r.command {
            Command::Add => {
                let state = self.state.load();
                if !state
                    .namespaces
                    .get(&r.namespace)
                    .is_some_and(|n| n.ambient)
                {
                    return Reply::ok(format!("{pod}: namespace not in the mesh"));
                }
                match self.enroller.provisional(&r.netns, &r.ips) {
                    Ok(()) => {
                        tracing::info!(%pod, netns = %r.netns.display(), "CNI ADD: held blocked until enrolled");
                        Reply::ok(format!("{pod}: captured (blocked until enrolled)"))
                    }
                    Err(e) => Reply::failed(format!("{pod}: {e}")),
                }
            }
            Command::Del => {
                self.enroller.drop_provisional(&r.netns);
                Reply::ok(format!("{pod}: released"))
            }
        }
    }
}

/// The CNI plugin's socket in the state directory, served once the agent runs.
fn serve_cni(args: &RunArgs) -> mpsc::Receiver<crate::cni::Asked> {
    let (tx, rx) = mpsc::channel(16);
    let path = args.state_dir.join(crate::cni::SOCKET);
    if let Err(e) = crate::cni::serve(path.clone(), tx) {
        tracing::warn!(path = %path.display(), "no CNI socket (new pods wait for it): {e}");
    }
    rx
}

/// Why the agent's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// SIGTERM/SIGINT, or the config source went away.
    Stopped,
    /// A successor holds the listeners now.
    HandedOver,
}

/// Takes the listening sockets of the agent running on this node, if one answers
/// on the handoff socket (an upgrade); else nothing (a first start, a crash).
fn take_over(args: &RunArgs) -> crate::handoff::Takeover {
    let path = args.state_dir.join(crate::handoff::SOCKET);
    match crate::handoff::take_over(&path) {
        Ok(Some(t)) => {
            tracing::info!(pods = t.pods.len(), "taking over from the agent running on this node: its listening sockets were handed over");
            t
        }
        Ok(None) => Default::default(),
        Err(e) => {
            tracing::warn!("no handoff from a running agent: {e}");
            Default::default()
        }
    }
}

/// Waits, on its own thread, for a successor on the handoff socket; says how many
/// pods' listeners it was given.
fn serve_handoff(
    args: &RunArgs,
    kept: crate::enrol::KeptListeners,
    admin: Vec<std::os::fd::OwnedFd>,
) -> mpsc::Receiver<usize> {
    let (tx, rx) = mpsc::channel(1);
    let path = args.state_dir.join(crate::handoff::SOCKET);
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        tracing::warn!(dir = %args.state_dir.display(), "no handoff socket (upgrades will not be hitless): {e}");
        return rx;
    }
    let listener = match crate::handoff::listen_at(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("no handoff socket (upgrades will not be hitless): {e}");
            return rx;
        }
    };
    std::thread::spawn(move || loop {
        let snapshot: Vec<_> = kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match crate::handoff::serve_one(&listener, &snapshot, &admin) {
            Ok(n) => {
                let _ = tx.blocking_send(n);
                return;
            }
            Err(e) => {
                tracing::warn!("handoff to a new agent failed, still serving: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    rx
}

/// After a handoff: until the connections and streams this agent serves (from
/// accept on, not only once spliced) have ended, or `limit` passed.
async fn drain(dp: &DataPath, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let left = || dp.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    while left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = left();
    tracing::info!(
        left,
        "drained; exiting (capture and listeners are the new agent's)"
    );
}

/// Ready once the local pods' certificates are there (or after 10 s, saying so).
async fn wait_for_certificates(dp: &DataPath, enroller: &Enroller) {
    for id in enroller.identities() {
        if dp
            .inputs
            .certs
            .wait(&id, Duration::from_secs(10))
            .await
            .is_none()
        {
            tracing::warn!(identity = %id, "no certificate yet; ready anyway, HBONE for it will wait");
        }
    }
}

/// Fetches jwksUri JWKS in the background; a change recompiles the config in force.
fn spawn_jwks_fetch(
    args: &RunArgs,
    state: &StateHandle,
    compiler: &Compiler,
    tx: mpsc::Sender<Update>,
) {
    let bundle = std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    let path = args.jwks_ca.clone().unwrap_or(bundle);
    let roots = match crate::jwks_fetch::roots(&path) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("no trust roots for jwksUri ({e}): rules naming one refuse every token");
            return;
        }
    };
    let (current, compiler) = (state.clone(), compiler.clone());
    let recompile = move || {
        let objects = (*current.load().objects).clone();
        match compiler.compile_all("jwksUri refresh", objects) {
            Ok(s) => {
                let _ = tx.try_send(Update::Apply(0, Box::new(s)));
            }
            Err(e) => tracing::warn!("recompiling after a JWKS change: {e}"),
        }
    };
    tokio::spawn(crate::jwks_fetch::run(state.clone(), roots, recompile));
}

pub(super) async fn serve(args: RunArgs) -> Result<(), Error> {
    let state = StateHandle::default();
    let compiler = Compiler::new(state.clone());
    let (cfg_tx, mut updates) = mpsc::channel::<Update>(4);
    let jwks_tx = cfg_tx.clone();
    let initial = start_source(&args, &compiler, cfg_tx)?;
    // Everything that can fail goes before the attachments, which stay pinned.
    let (certs, roots) = cert_manager(&args.node, &args.identity, Some(&args.state_dir))?;
    let spans = crate::telemetry::otlp::Spans::start_if(args.traces.as_ref())?;
    // Attached first: if that fails, an agent running here keeps its sockets.
    let (kernel, orig_dst) = attach(&args)?;
    let takeover = take_over(&args);
    let listeners = bind_admin(&args, takeover.admin).await?;
    let admin_fds = listeners
        .iter()
        .filter_map(|(l, _)| std::os::fd::AsFd::as_fd(l).try_clone_to_owned().ok())
        .collect();
    let (dp, metrics) = data_path(&args, &state, (certs, roots), orig_dst, &kernel, spans);
    spawn_pool_expiry(&dp);
    spawn_jwks_fetch(&args, &state, &compiler, jwks_tx);
    let ready = Arc::new(AtomicBool::new(false));
    let enrolled = Arc::new(Mutex::new(Vec::new()));
    let admin_state = admin::Admin {
        ready: ready.clone(),
        metrics: metrics.clone(),
        kernel: kernel.clone(),
        dp: dp.clone(),
        enrolled: enrolled.clone(),
        node: args.node.clone(),
        public: false,
    };
    let admin_tasks = spawn_admin(listeners, &admin_state);
    let mut enroller = Enroller::new(
        args.node.clone(),
        kernel.clone(),
        dp.clone(),
        metrics.clone(),
    )
    .with_places(args.netns_places.clone());
    let mut signals = Signals::new()?;
    let Some(first) = first_state(&args, initial, (&mut updates, &mut signals), &metrics).await
    else {
        return Ok(());
    };
    metrics
        .config
        .degraded
        .set(first.fail_closed().count() as i64);
    state.store(first);
    metrics.config.applied();
    enroller.inherit(takeover.pods);
    let mut agent = Agent {
        state,
        metrics,
        enroller,
        enrolled,
        dp: dp.clone(),
        persist_to: matches!(args.config, ConfigSource::ControlPlane)
            .then(|| args.state_dir.clone()),
    };
    agent.reconcile();
    // This agent's attachments serve every pod it could enrol: what an earlier
    // agent left pinned goes now, not before (no gap).
    kernel
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release_previous();
    wait_for_certificates(&dp, &agent.enroller).await;
    // The CNI socket answers before readiness is reported: a runtime told the
    // agent is ready finds it serving.
    let mut cni = serve_cni(&args);
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(node = %args.node, admin = %args.admin, "agent ready");
    let mut handed = serve_handoff(&args, agent.enroller.kept(), admin_fds);
    if agent
        .run(&mut updates, &mut signals, (&mut handed, &mut cni))
        .await
        == End::HandedOver
    {
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        agent.enroller.stop_accepting();
        agent.dp.draining.send_replace(true);
        for t in admin_tasks {
            t.abort();
        }
        drain(&agent.dp, args.drain).await;
        agent.dp.inputs.telemetry.spans.close().await;
        return Ok(());
    }
    // Capture stays: enrolled pods fail closed until an agent serves them again.
    // Only leaving the mesh or `mesh-agent uninstall` removes it.
    tracing::info!(pin_dir = %args.pin_dir.display(), "stopping; pods stay captured and fail closed until an agent serves them (`mesh-agent uninstall` removes capture)");
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    agent.dp.inputs.telemetry.spans.close().await;
    drop(agent);
    Ok(())
}
