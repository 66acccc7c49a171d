//! `mesh-agent waypoint`: the waypoint module as a process of its own, a member of
//! the mesh with its own Workload and identity.
//! - `--hbone`: a shared waypoint. Node agents send the traffic of Services labelled
//!   `ferrymesh.io/use-waypoint: <this workload>` here as HBONE streams whose target
//!   is the Service address; each stream is served as HTTP and routed.
//! - `--gateway ns/name` with `--http`/`--https`: an ingress API gateway. Clients
//!   outside the mesh speak plain HTTP or TLS; routes whose parentRef is this Gateway
//!   pick backends, reached over mesh mTLS with the gateway's identity. Policy that
//!   selects the gateway's workload (JWT, authorization) and route rate limits apply
//!   at the edge.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Request, Response, StatusCode};
use mesh_infra::admin::Reply;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

use super::{conn, runtime::Runtime, server};
use crate::{
    app::{self, IdentityArgs},
    datapath::{DataPath, Inputs, Tunnel},
    inpod,
    local::Pod,
    metrics::Metrics,
    plan,
    source::{Compiler, Update},
    telemetry::Telemetry,
    tls,
    tunnel::hbone::{io::H2Io, pool::Pool, server as hbone_server},
};
use crate::{guard::Reason, plan::Parent};
use mesh_model::{config, identity::Identity, state::StateHandle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("workload {0} is not in the config; the waypoint needs its own Workload object (labelled ferrymesh.io/dataplane-mode: none so that no node agent captures it)")]
    NoWorkload(String),
    #[error("{0} is not namespace/name")]
    BadName(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error("edge TLS: {0}")]
    EdgeTls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("give --hbone, or --gateway with --http and/or --https")]
    NothingToServe,
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Traces(#[from] crate::telemetry::otlp::Error),
}

#[derive(Debug, Clone)]
pub struct Args {
    pub config: PathBuf,
    pub node: String,
    /// namespace/name of the waypoint's own Workload.
    pub workload: String,
    pub hbone: bool,
    pub gateway: Option<String>,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Proxies in front of the edge whose X-Forwarded-For entries are trusted.
    pub trusted_proxies: u8,
    pub metrics: SocketAddr,
    pub reload_interval: Duration,
    pub worker_threads: usize,
    pub identity: IdentityArgs,
    /// Where request spans are exported (OTLP), if anywhere.
    pub traces: Option<crate::telemetry::otlp::Export>,
}

pub fn run(args: Args) -> Result<(), Error> {
    inpod::init_home().map_err(Error::Runtime)?;
    app::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve(args))
}

fn split(name: &str) -> Result<(String, String), Error> {
    name.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| Error::BadName(name.to_owned()))
}

fn edge_tls(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::EdgeTls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::EdgeTls(format!("{}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::EdgeTls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::EdgeTls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Shared-waypoint streams: the target is a Service address.
#[derive(Clone)]
struct Streams(Arc<Runtime>);

impl hbone_server::OnStream for Streams {
    async fn on_stream(
        &self,
        req: Request<h2::RecvStream>,
        respond: SendResponse<Bytes>,
        peer: SocketAddr,
        source: Arc<Identity>,
        pod: Arc<Pod>,
        dp: DataPath,
    ) {
        stream(req, respond, peer, source, (pod, dp, self.0.clone())).await
    }
}

/// The waypoint's own pod, the data path and the L7 state.
type Ctx = (Arc<Pod>, DataPath, Arc<Runtime>);

async fn stream(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    source: Arc<Identity>,
    (pod, dp, l7): Ctx,
) {
    let target = match hbone_server::connect_authority(&req) {
        Ok(t) => t,
        Err(r) => return hbone_server::refuse(respond, r.status, r.reason),
    };
    let state = dp.inputs.state.load();
    let parent = match plan::l7_parent(&state, target) {
        Some(p) => p,
        None => match state.services_by_vip.get(&target.ip()) {
            Some(s) if s.ports.iter().any(|p| p.port == target.port()) => Parent::Service {
                service: s.clone(),
                port: target.port(),
            },
            _ => {
                return hbone_server::refuse(
                    respond,
                    StatusCode::BAD_REQUEST,
                    "target is not a Service this waypoint serves",
                );
            }
        },
    };
    drop(state);
    let send = match respond.send_response(Response::new(()), false) {
        Ok(s) => s,
        Err(_) => return,
    };
    let io = H2Io::new(send, req.into_body());
    let conn = Arc::new(conn::Conn {
        pod,
        dp,
        l7,
        parent,
        source: Some((*source).clone()),
        client: peer,
        original: target,
        at_destination: false,
        trusted_proxies: 0,
    });
    if let Err(e) = server::serve(io, conn).await {
        tracing::debug!(%peer, %target, "waypoint stream ended: {e}");
    }
}

async fn edge(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    (pod, dp, l7): Ctx,
    (gateway, trusted_proxies): (String, u8),
) {
    let mut backoff = mesh_infra::backoff::Backoff::accept();
    loop {
        let (tcp, client) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("edge accept failed: {e}");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        // Per-client and total caps (counted in ferrymesh_hostile_refused_total).
        let Ok(place) = dp.inputs.guard.admit(client.ip()) else {
            let _ = tcp.set_zero_linger();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let original = tcp.local_addr().unwrap_or(client);
        let (pod, dp, l7, tls, gateway) = (
            pod.clone(),
            dp.clone(),
            l7.clone(),
            tls.clone(),
            gateway.clone(),
        );
        tokio::spawn(async move {
            let state = dp.inputs.state.load();
            let Some(workload) = state.workloads_by_ip.get(&pod.addresses[0]).cloned() else {
                return;
            };
            drop(state);
            let conn = Arc::new(conn::Conn {
                pod,
                dp,
                l7,
                parent: Parent::Gateway {
                    key: gateway,
                    workload,
                },
                source: None,
                client: SocketAddr::new(client.ip().to_canonical(), client.port()),
                original,
                at_destination: false,
                trusted_proxies,
            });
            let guard = conn.dp.inputs.guard.clone();
            let r = match tls {
                Some(acceptor) => {
                    let limit = guard.limits.handshake_timeout;
                    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => server::serve(s, conn).await,
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => {
                            guard.refuse(Reason::HandshakeTimeout, || {
                                tracing::info!(%client, "edge TLS handshake timed out");
                            });
                            Ok(())
                        }
                    }
                }
                None => server::serve(tcp, conn).await,
            };
            drop(place);
            if let Err(e) = r {
                tracing::debug!(%client, "edge connection ended: {e}");
            }
        });
    }
}

/// Metrics, readiness and the config generation, on the shared admin server.
async fn admin(
    listener: TcpListener,
    dp: DataPath,
    ready: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
) {
    let guard = dp.inputs.guard.clone();
    let handler = move |path: &str| match path {
        "/metrics" => Reply::metrics(dp.inputs.telemetry.encode()),
        "/healthz/ready" => Reply::ready(ready.load(Ordering::Relaxed)),
        "/stats" => Reply::json(
            &serde_json::json!({"config": {"generation": generation.load(Ordering::Relaxed)}}),
        ),
        _ => Reply::not_found("try /metrics, /stats or /healthz/ready"),
    };
    let handler = crate::guard::Counted { handler, guard };
    mesh_infra::admin::serve(listener, Arc::new(handler)).await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// The waypoint's own workload, from the config.
fn own_workload(
    state: &StateHandle,
    name: &str,
) -> Result<Arc<mesh_model::state::WorkloadInfo>, Error> {
    let (ns, n) = split(name)?;
    state
        .load()
        .workloads
        .iter()
        .find(|w| w.namespace() == ns && w.name() == n)
        .cloned()
        .ok_or_else(|| Error::NoWorkload(name.to_owned()))
}

fn edge_acceptor(args: &Args) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    match (&args.https, &args.tls_cert, &args.tls_key) {
        (Some(_), Some(c), Some(k)) => Ok(Some(edge_tls(c, k)?)),
        (Some(_), _, _) => Err(Error::EdgeTls(
            "--https needs --tls-cert and --tls-key".into(),
        )),
        _ => Ok(None),
    }
}

/// Starts the HBONE server (shared waypoint) and the edge listeners (gateway).
async fn listen(args: &Args, pod: &Arc<Pod>, dp: &DataPath) -> Result<(), Error> {
    let l7 = Arc::new(Runtime::default());
    let edge_tls = edge_acceptor(args)?;
    if args.hbone {
        let resolver = Arc::new(crate::identity::manager::PodCertResolver {
            manager: dp.inputs.certs.clone(),
            identity: pod.identity.clone(),
        });
        let cfg = tls::server_config(resolver, dp.inputs.roots.clone())
            .map_err(|e| Error::Identity(e.to_string()))?;
        let addr = SocketAddr::from(([0u16; 8], mesh_common::ports::HBONE));
        let l = bind(addr).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        tokio::spawn(hbone_server::serve_with(
            l,
            acceptor,
            pod.clone(),
            dp.clone(),
            Streams(l7.clone()),
        ));
    }
    let Some(gw) = &args.gateway else {
        return Ok(());
    };
    for (addr, tls) in [(args.http, None), (args.https, edge_tls)] {
        if let Some(addr) = addr {
            let l = bind(addr).await?;
            let ctx = (pod.clone(), dp.clone(), l7.clone());
            tokio::spawn(edge(l, tls, ctx, (gw.clone(), args.trusted_proxies)));
        }
    }
    Ok(())
}

/// Applies config changes until told to stop.
async fn reload(
    args: &Args,
    compiler: Compiler,
    state: &StateHandle,
    generation: &AtomicU64,
) -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
    let (tx, mut updates) = tokio::sync::mpsc::channel(4);
    tokio::spawn(crate::source::file(
        args.config.clone(),
        args.reload_interval,
        compiler,
        tx,
    ));
    loop {
        let update = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            u = updates.recv() => match u {
                Some(u) => u,
                None => return Ok(()),
            },
        };
        match update {
            Update::Apply(_, s) => {
                let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                state.store(*s);
                tracing::info!(generation = g, "config reloaded");
            }
            Update::Refused(_, e) => {
                tracing::error!("config refused, the last good config stays in force: {e}")
            }
        }
    }
}

async fn serve(args: Args) -> Result<(), Error> {
    if !args.hbone && (args.gateway.is_none() || (args.http.is_none() && args.https.is_none())) {
        return Err(Error::NothingToServe);
    }
    let state = StateHandle::default();
    let compiler = Compiler::new(state.clone());
    state.store(compiler.load(&args.config)?);
    let w = own_workload(&state, &args.workload)?;
    let (certs, roots) = app::cert_manager(&args.node, &args.identity, None)
        .map_err(|e| Error::Identity(e.to_string()))?;
    let certs = Arc::new(certs);
    let identity = Identity::new(
        &args.identity.trust_domain,
        w.namespace(),
        w.service_account(),
    );
    certs.acquire(&identity);
    let netns = inpod::Netns::open(std::path::Path::new("/proc/self/ns/net"))
        .map_err(|e| Error::Identity(e.to_string()))?;
    let mut telemetry = Telemetry::new(&args.identity.cluster_id);
    telemetry.spans = crate::telemetry::otlp::Spans::start_if(args.traces.as_ref())?;
    let metrics = Metrics::new(telemetry.registry());
    let pool = Pool::new(Duration::from_secs(60));
    pool.counters.register(telemetry.registry());
    certs.counters.register(telemetry.registry());
    let guard = crate::guard::Guard::new(crate::guard::Limits::for_this_process());
    guard.register(telemetry.registry());
    let pod = Arc::new(Pod {
        key: w.key(),
        netns,
        identity: identity.clone(),
        addresses: w.addresses().to_vec(),
        counters: metrics.workload(&w.key()),
    });
    let dp = DataPath::new(Inputs {
        orig_dst: None,
        state: state.clone(),
        trust_domain: args.identity.trust_domain.clone(),
        certs: certs.clone(),
        roots,
        pool,
        telemetry,
        tunnel: Tunnel::Hbone,
        guard,
    });
    let ready = Arc::new(AtomicBool::new(false));
    let generation = Arc::new(AtomicU64::new(1));
    let admin_listener = bind(args.metrics).await?;
    tokio::spawn(admin(
        admin_listener,
        dp.clone(),
        ready.clone(),
        generation.clone(),
    ));
    listen(&args, &pod, &dp).await?;
    if certs
        .wait(&identity, Duration::from_secs(10))
        .await
        .is_none()
    {
        tracing::warn!(%identity, "no certificate yet; is the CA reachable and does it know this workload's node?");
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(workload = %w.key(), %identity, hbone = args.hbone, gateway = ?args.gateway, "waypoint ready");
    reload(&args, compiler, &state, &generation).await?;
    tracing::info!("waypoint shutting down");
    dp.inputs.telemetry.spans.close().await;
    certs.release(&identity);
    Ok(())
}
