//! The HBONE server of one enrolled pod (port 15008 in its netns): mutual TLS with
//! the pod's identity, then one CONNECT stream per tunnelled connection, checked
//! against L4 policy and delivered to the application.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{
    io::H2Io, keepalive::Keepalive, CONNECTION_WINDOW, MAX_FRAME, REASON_HEADER, STREAM_WINDOW,
};
use crate::{
    datapath::DataPath,
    enforce::{self, Caller, Judging},
    guard::{self, Guard, Reason},
    local::Pod,
    telemetry::{Reporter, Security},
    tls,
    tunnel::{
        access::{Access, Istio},
        inbound, splice,
    },
};
use mesh_model::identity::Identity;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What happens to each CONNECT stream of a verified peer.
pub trait OnStream: Clone + Send + Sync + 'static {
    fn on_stream(
        &self,
        req: Request<h2::RecvStream>,
        respond: SendResponse<Bytes>,
        peer: SocketAddr,
        source: Arc<Identity>,
        pod: Arc<Pod>,
        dp: DataPath,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// A pod's HBONE server: deliver to the application after L4 policy, or, when
/// the pod has L7 policy, serve HTTP here and judge every request (a valid mesh
/// certificate alone never bypasses an L7 rule).
#[derive(Clone)]
pub struct Deliver {
    pub l7: Arc<crate::waypoint::runtime::Runtime>,
}

impl OnStream for Deliver {
    fn on_stream(
        &self,
        req: Request<h2::RecvStream>,
        respond: SendResponse<Bytes>,
        peer: SocketAddr,
        source: Arc<Identity>,
        pod: Arc<Pod>,
        dp: DataPath,
    ) -> impl std::future::Future<Output = ()> + Send {
        stream(req, respond, peer, source, pod, dp, self.l7.clone())
    }
}

pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pod: Arc<Pod>,
    dp: DataPath,
    l7: Arc<crate::waypoint::runtime::Runtime>,
) {
    serve_with(listener, acceptor, pod, dp, Deliver { l7 }).await
}

/// Who judges the requests of a stream to `pod` from `source`.
enum Requests {
    /// This agent, at L7: the pod has L7 policy (rules with HTTP attributes,
    /// RequestAuthentication).
    JudgedHere(Arc<mesh_model::state::WorkloadInfo>),
    /// The shared waypoint that sends the stream judged them.
    JudgedByWaypoint,
    /// Nobody: the L4 check decides alone.
    NotJudged,
}

impl Requests {
    fn judging(&self) -> Judging {
        match self {
            Requests::NotJudged => Judging::L4Only,
            Requests::JudgedHere(_) | Requests::JudgedByWaypoint => Judging::PerRequest,
        }
    }
}

fn requests(dp: &DataPath, pod: &Pod, source: &Identity) -> Requests {
    let state = dp.inputs.state.load();
    let Some(w) = pod
        .addresses
        .first()
        .and_then(|a| state.workloads_by_ip.get(a))
    else {
        return Requests::NotJudged;
    };
    let inputs = &dp.inputs;
    let from_waypoint = || {
        state
            .services_by_key
            .values()
            .filter_map(|s| s.waypoint.as_ref())
            .any(|wp| inputs.identity_of(wp) == *source)
    };
    if !w.l7 {
        return Requests::NotJudged;
    }
    if from_waypoint() {
        Requests::JudgedByWaypoint
    } else {
        Requests::JudgedHere(w.clone())
    }
}

/// An HBONE server whose streams go to `on`.
pub async fn serve_with<S: OnStream>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pod: Arc<Pod>,
    dp: DataPath,
    on: S,
) {
    let mut backoff = mesh_infra::backoff::Backoff::accept();
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                backoff.reset();
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let Ok(permit) = dp.inputs.guard.admit(peer.ip()) else {
                    let _ = tcp.set_zero_linger();
                    continue;
                };
                let (acceptor, pod, dp, on) =
                    (acceptor.clone(), pod.clone(), dp.clone(), on.clone());
                tokio::spawn(async move {
                    connection(tcp, peer, acceptor, pod, dp, on).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(pod = %pod.key, "HBONE accept failed: {e}");
                backoff.wait().await;
            }
        }
    }
}

/// Mutual TLS with the peer: the stream and the SPIFFE identity it proved, or None
/// (logged) when it proved none.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    pod: &Pod,
    guard: &Guard,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Identity)> {
    let limit = guard.limits.handshake_timeout;
    let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(pod = %pod.key, %peer, "HBONE TLS handshake refused: {e}");
            return None;
        }
        Err(_) => {
            guard.refuse(Reason::HandshakeTimeout, || {
                tracing::info!(pod = %pod.key, %peer, ?limit, "HBONE TLS handshake timed out");
            });
            return None;
        }
    };
    match tls.get_ref().1.peer_certificates().map(tls::peer_identity) {
        Some(Ok(id)) => Some((tls, id)),
        Some(Err(e)) => {
            tracing::info!(pod = %pod.key, %peer, "HBONE peer refused: {e}");
            None
        }
        None => {
            tracing::info!(pod = %pod.key, %peer, "HBONE peer presented no certificate");
            None
        }
    }
}

async fn connection<S: OnStream>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    pod: Arc<Pod>,
    dp: DataPath,
    on: S,
) {
    let c = &pod.counters;
    let _ = tcp.set_nodelay(true);
    // The pod's certificate may still be on its way right after enrolment.
    if dp
        .inputs
        .certs
        .wait(&pod.identity, HANDSHAKE_TIMEOUT)
        .await
        .is_none()
    {
        c.hbone_refused_tls.inc();
        tracing::warn!(pod = %pod.key, identity = %pod.identity, "HBONE connection dropped: no certificate for this pod yet; is the CA reachable?");
        return;
    }
    let guard = &dp.inputs.guard;
    let Some((tls, source)) = handshake(tcp, peer, &acceptor, &pod, guard).await else {
        c.hbone_refused_tls.inc();
        return;
    };
    let limits = &guard.limits;
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(limits.hbone_streams)
        .max_header_list_size(limits.header_list_bytes)
        // Rapid-reset protection: a client that resets streams as fast as it opens
        // them is disconnected.
        .max_pending_accept_reset_streams(100)
        .handshake::<_, Bytes>(tls);
    let mut h2 = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::info!(pod = %pod.key, %peer, %source, "HBONE HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            guard.refuse(Reason::HandshakeTimeout, || {
                tracing::info!(pod = %pod.key, %peer, %source, "HBONE HTTP/2 handshake timed out");
            });
            return;
        }
    };
    let source = Arc::new(source);
    let keepalive = Keepalive::new(
        h2.ping_pong(),
        limits.keepalive_interval,
        limits.keepalive_timeout,
    )
    .until_lost();
    tokio::pin!(keepalive);
    // A successor took this node's listeners: GOAWAY, so that peers open their
    // next streams on a new connection (to it) while these streams run on.
    let mut draining = dp.draining.subscribe();
    let mut going_away = false;
    loop {
        let next = tokio::select! {
            next = h2.accept() => Ok(next),
            _ = draining.wait_for(|d| *d), if !going_away => Err(()),
            () = &mut keepalive => {
                guard.refuse(Reason::KeepaliveTimeout, || {
                    tracing::info!(pod = %pod.key, %peer, %source, "HBONE connection closed: no answer to a keepalive PING");
                });
                return;
            }
        };
        let Ok(next) = next else {
            h2.graceful_shutdown();
            going_away = true;
            continue;
        };
        match next {
            Some(Ok((req, respond))) => {
                let on = on.clone();
                let (source, pod, dp) = (source.clone(), pod.clone(), dp.clone());
                tokio::spawn(
                    async move { on.on_stream(req, respond, peer, source, pod, dp).await },
                );
            }
            Some(Err(e)) => {
                tracing::debug!(pod = %pod.key, %peer, "HBONE connection ended: {e}");
                break;
            }
            None => break,
        }
    }
}

pub fn refuse(mut respond: SendResponse<Bytes>, status: StatusCode, reason: &str) {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    if let Ok(v) = reason.parse() {
        resp.headers_mut().insert(REASON_HEADER, v);
    }
    let _ = respond.send_response(resp, true);
}

/// Why a CONNECT request is refused before policy: the status and the reason sent
/// in `x-ferrymesh-reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    /// Set when the request is hostile (counted as such).
    pub hostile: Option<Reason>,
}

/// The target of a CONNECT request: CONNECT and an `ip:port` authority. Pure.
pub fn connect_authority<B>(req: &Request<B>) -> Result<SocketAddr, Refusal> {
    if req.method() != http::Method::CONNECT {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "HBONE accepts CONNECT only",
            hostile: None,
        });
    }
    let target = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        .ok_or(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "authority must be ip:port",
            hostile: None,
        })?;
    if guard::is_agent_port(target.port()) {
        // The agent's own port in the pod: delivering there would loop back.
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "the target port is one of the agent's own",
            hostile: Some(Reason::AgentPort),
        });
    }
    Ok(SocketAddr::new(target.ip().to_canonical(), target.port()))
}

/// The target of a CONNECT stream to a pod: as `connect_authority`, and one of the
/// pod's own `addresses`. Pure.
pub fn connect_target<B>(
    req: &Request<B>,
    addresses: &[std::net::IpAddr],
) -> Result<SocketAddr, Refusal> {
    let target = connect_authority(req)?;
    if !addresses.contains(&target.ip()) {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "authority is not an address of this workload",
            hostile: None,
        });
    }
    Ok(target)
}

async fn stream(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    source: Arc<Identity>,
    pod: Arc<Pod>,
    dp: DataPath,
    l7: Arc<crate::waypoint::runtime::Runtime>,
) {
    let c = &pod.counters;
    let start = std::time::Instant::now();
    let _in_flight = dp.in_flight();
    c.inbound_captured.inc();
    let target = match connect_target(&req, &pod.addresses) {
        Ok(t) => t,
        Err(r) => {
            c.inbound_failed.inc();
            let log = || tracing::info!(target: "access", pod = %pod.key, %peer, %source, authority = ?req.uri().authority(), status = r.status.as_u16(), "CONNECT refused: {}", r.reason);
            match r.hostile {
                Some(h) => dp.inputs.guard.refuse(h, log),
                None => log(),
            }
            return refuse(respond, r.status, r.reason);
        }
    };
    let caller = Caller {
        identity: Some(&source),
        ip: peer.ip().to_canonical(),
    };
    let requests = requests(&dp, &pod, &source);
    let judging = requests.judging();
    if let Err(denied) = enforce::connection(&dp.inputs, &pod, caller, target, judging) {
        c.inbound_denied.inc();
        return refuse(respond, StatusCode::UNAUTHORIZED, &denied.to_string());
    }
    if let Requests::JudgedHere(workload) = requests {
        return serve_l7(
            req,
            respond,
            (peer, target),
            source,
            pod,
            dp,
            (l7, workload),
        )
        .await;
    }
    let registration = dp
        .established
        .register(&pod, caller.identity, caller.ip, target, judging);
    let Some(app) = inbound::connect_app(&pod, target, &dp.inputs.guard).await else {
        return refuse(
            respond,
            StatusCode::SERVICE_UNAVAILABLE,
            "the application refused or did not answer",
        );
    };
    let send = match respond.send_response(Response::new(()), false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(pod = %pod.key, "HBONE stream reset before 200: {e}");
            return;
        }
    };
    tracing::debug!(pod = %pod.key, %source, %target, "HBONE stream delivered");
    let tunnel = H2Io::new(send, req.into_body());
    let access = Access {
        reporter: "inbound",
        source: Some(&source),
        destination: Some(&pod.identity),
        source_addr: peer,
        destination_addr: target,
        transport: "hbone",
        start,
        istio: Istio {
            reporter: Reporter::Destination,
            service_ip: None,
            security: Security::MutualTls,
        },
    };
    // Counted from the source's side: sent = towards the application.
    let copy = async {
        splice::proxy_until(app, tunnel, c, registration.closed())
            .await
            .reversed()
    };
    access.proxied(&dp.inputs, c, copy).await;
}

/// The stream is HTTP to a pod with L7 policy: the waypoint serves it on this
/// node, with the peer's identity as the caller, and delivers each allowed request
/// to the application directly.
async fn serve_l7(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    (peer, target): (SocketAddr, SocketAddr),
    source: Arc<Identity>,
    pod: Arc<Pod>,
    dp: DataPath,
    (l7, workload): (
        Arc<crate::waypoint::runtime::Runtime>,
        Arc<mesh_model::state::WorkloadInfo>,
    ),
) {
    let send = match respond.send_response(Response::new(()), false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(pod = %pod.key, "HBONE stream reset before 200: {e}");
            return;
        }
    };
    let tunnel = H2Io::new(send, req.into_body());
    let conn = Arc::new(crate::waypoint::conn::Conn {
        pod,
        dp,
        l7,
        parent: crate::plan::Parent::Workload { workload },
        source: Some((*source).clone()),
        client: peer,
        original: target,
        at_destination: true,
        trusted_proxies: 0,
    });
    if let Err(e) = crate::waypoint::server::serve(tunnel, conn).await {
        tracing::debug!(%peer, %target, "L7 at the destination ended: {e}");
    }
}

#[cfg(test)]
mod tests;
