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
    io::H2Io, CONNECTION_WINDOW, MAX_FRAME, MAX_STREAMS_PER_CONNECTION, REASON_HEADER,
    STREAM_WINDOW,
};
use crate::{
    datapath::DataPath,
    enforce::{self, Caller},
    local::Pod,
    tls,
    tunnel::{access::Access, inbound, splice},
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

/// A pod's HBONE server: deliver to the application after L4 policy.
#[derive(Clone)]
pub struct Deliver;

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
        stream(req, respond, peer, source, pod, dp)
    }
}

pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, pod: Arc<Pod>, dp: DataPath) {
    serve_with(listener, acceptor, pod, dp, Deliver).await
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
                tokio::spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    pod.clone(),
                    dp.clone(),
                    on.clone(),
                ));
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
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Identity)> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(pod = %pod.key, %peer, "HBONE TLS handshake refused: {e}");
            return None;
        }
        Err(_) => {
            tracing::info!(pod = %pod.key, %peer, "HBONE TLS handshake timed out");
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
    let Some((tls, source)) = handshake(tcp, peer, &acceptor, &pod).await else {
        c.hbone_refused_tls.inc();
        return;
    };
    let mut h2 = match h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION as u32)
        // Rapid-reset protection: a client that resets streams as fast as it opens
        // them is disconnected.
        .max_pending_accept_reset_streams(100)
        .handshake::<_, Bytes>(tls)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::info!(pod = %pod.key, %peer, %source, "HBONE HTTP/2 handshake failed: {e}");
            return;
        }
    };
    let source = Arc::new(source);
    while let Some(next) = h2.accept().await {
        match next {
            Ok((req, respond)) => {
                let on = on.clone();
                let (source, pod, dp) = (source.clone(), pod.clone(), dp.clone());
                tokio::spawn(
                    async move { on.on_stream(req, respond, peer, source, pod, dp).await },
                );
            }
            Err(e) => {
                tracing::debug!(pod = %pod.key, %peer, "HBONE connection ended: {e}");
                break;
            }
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
}

/// The target of a CONNECT request: CONNECT and an `ip:port` authority. Pure.
pub fn connect_authority<B>(req: &Request<B>) -> Result<SocketAddr, Refusal> {
    if req.method() != http::Method::CONNECT {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "HBONE accepts CONNECT only",
        });
    }
    let target = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        .ok_or(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "authority must be ip:port",
        })?;
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
) {
    let c = &pod.counters;
    let start = std::time::Instant::now();
    c.inbound_captured.inc();
    let target = match connect_target(&req, &pod.addresses) {
        Ok(t) => t,
        Err(r) => {
            c.inbound_failed.inc();
            return refuse(respond, r.status, r.reason);
        }
    };
    let caller = Caller {
        identity: Some(&source),
        ip: peer.ip().to_canonical(),
    };
    if let Err(denied) = enforce::connection(&dp.inputs, &pod, caller, target.port()) {
        c.inbound_denied.inc();
        return refuse(respond, StatusCode::UNAUTHORIZED, &denied.to_string());
    }
    let Some(app) = inbound::connect_app(&pod, target).await else {
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
    };
    let copy = async {
        splice::proxy(app, tunnel, c)
            .await
            .map(|(to_app, from_app)| (from_app, to_app))
    };
    access.proxied(&dp.inputs.telemetry, c, copy).await;
}

#[cfg(test)]
mod tests;
