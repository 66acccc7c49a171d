//! The executors of plans: one per way a connection leaves a pod. The L4 outbound
//! path splices the client's socket with what they return; the waypoint speaks HTTP
//! over it. Counters, logs and errors of each way live here, once.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use mesh_model::identity::Identity;

use crate::{
    datapath::DataPath,
    enforce::{self, Caller, Denied, Judging},
    inpod,
    local::Pod,
    plan::{HboneTarget, Route},
    tunnel::{
        hbone::{io::H2Io, pool},
        inbound,
        splice::WaitReadable,
    },
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CERT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused by the destination's policy: {0}")]
    Denied(Denied),
    #[error("the destination pod at {0} is no longer enrolled on this node")]
    Gone(SocketAddr),
    #[error("the application at {0} did not accept the connection; is it listening?")]
    App(SocketAddr),
    #[error("no certificate for {0} after {CERT_WAIT:?}; is the CA reachable and does it know this pod's node?")]
    NoCertificate(Identity),
    #[error("HBONE: {0}")]
    Hbone(#[from] pool::Error),
    #[error("in-pod socket: {0}")]
    Socket(#[from] inpod::Error),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {0}: timed out after {CONNECT_TIMEOUT:?}; is a NetworkPolicy or a down node in the way?")]
    Timeout(SocketAddr),
}

impl Error {
    /// The destination's policy refused: retrying will not help.
    pub fn denied(&self) -> bool {
        matches!(self, Error::Denied(_))
            || matches!(self, Error::Hbone(pool::Error::Refused { status: 401, .. }))
    }
}

/// How the bytes travel, as the access log and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    SameNode,
    Hbone,
    Plaintext,
}

impl Transport {
    /// Istio's `connection_security_policy` of it: a same-node delivery is
    /// between two identities the agent holds itself (as ztunnel reports its
    /// in-node shortcut).
    pub fn security(self) -> crate::telemetry::Security {
        match self {
            Transport::SameNode | Transport::Hbone => crate::telemetry::Security::MutualTls,
            Transport::Plaintext => crate::telemetry::Security::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::SameNode => "same-node",
            Transport::Hbone => "hbone",
            Transport::Plaintext => "plaintext",
        }
    }
}

/// A connected upstream byte stream.
pub enum Upstream {
    Tcp(TcpStream),
    Hbone(Box<H2Io>, pool::StreamGuard),
}

/// A route, connected.
pub struct Connected {
    pub stream: Upstream,
    pub transport: Transport,
    /// The peer's identity when the mesh proved it.
    pub destination: Option<Identity>,
    /// The source address the destination sees.
    pub source: SocketAddr,
    /// Same node: the destination's registration of the connection, which a policy
    /// change can close.
    pub registration: Option<crate::established::Registration>,
}

/// Executes `route` from `pod`; `client` is the application's socket address;
/// `judging` says whether the waypoint judges the connection's requests (for the
/// L4 check of a destination on this node).
pub async fn connect(
    dp: &DataPath,
    pod: &Pod,
    route: &Route,
    client: SocketAddr,
    judging: Judging,
) -> Result<Connected, Error> {
    let source_ip = |addr: &SocketAddr| pod.address_like(&addr.ip()).unwrap_or(client.ip());
    let result = match route {
        Route::SharedWaypoint { tunnel, .. } | Route::Hbone { tunnel, .. } => {
            let client = SocketAddr::new(source_ip(&tunnel.target), client.port());
            hbone(dp, pod, tunnel, client).await
        }
        Route::SameNode { addr, .. } => same_node(dp, pod, *addr, source_ip(addr), judging).await,
        Route::Passthrough { addr, .. } => plaintext(pod, *addr).await,
    };
    let c = &pod.counters;
    match &result {
        Ok(up) => {
            c.outbound_connected.inc();
            let by_transport = match up.transport {
                Transport::Hbone => &c.outbound_hbone,
                Transport::Plaintext => &c.outbound_plaintext,
                Transport::SameNode => &c.outbound_same_node,
            };
            by_transport.inc();
        }
        Err(e) => {
            c.outbound_failed.inc();
            tracing::info!(pod = %pod.key, ?route, "outbound connection failed: {e}");
        }
    }
    result
}

/// Both ends on this node: no network, no second proxy; the destination's policy
/// applies with the source's identity, counted on the destination as an inbound
/// connection would be.
async fn same_node(
    dp: &DataPath,
    pod: &Pod,
    addr: SocketAddr,
    source_ip: IpAddr,
    judging: Judging,
) -> Result<Connected, Error> {
    let local = dp.pods.get(addr.ip()).ok_or(Error::Gone(addr))?;
    local.counters.inbound_captured.inc();
    let caller = Caller {
        identity: Some(&pod.identity),
        ip: source_ip,
    };
    if let Err(d) = enforce::connection(&dp.inputs, &local, caller, addr, judging) {
        local.counters.inbound_denied.inc();
        return Err(Error::Denied(d));
    }
    let app = inbound::connect_app(&local, addr, &dp.inputs.guard)
        .await
        .ok_or(Error::App(addr))?;
    let registration =
        Some(
            dp.established
                .register(&local, caller.identity, caller.ip, addr, judging),
        );
    Ok(Connected {
        stream: Upstream::Tcp(app),
        transport: Transport::SameNode,
        destination: Some(local.identity.clone()),
        source: SocketAddr::new(source_ip, 0),
        registration,
    })
}

/// A CONNECT stream over pooled mutual TLS.
async fn hbone(
    dp: &DataPath,
    pod: &Pod,
    tunnel: &HboneTarget,
    client: SocketAddr,
) -> Result<Connected, Error> {
    let cert = dp
        .inputs
        .certs
        .wait(&pod.identity, CERT_WAIT)
        .await
        .ok_or_else(|| Error::NoCertificate(pod.identity.clone()))?;
    let key = pool::Key {
        source: pod.identity.clone(),
        destination: tunnel.identity.clone(),
        address: tunnel.via.ip(),
    };
    let dial = pool::Dial {
        netns: &pod.netns,
        source_cert: cert.certified.clone(),
        roots: dp.inputs.roots.clone(),
    };
    // Boxed: the TLS handshake state is large and must not stay in the task for
    // the life of the connection.
    let (io, guard) = Box::pin(dp.inputs.pool.connect(&key, tunnel.target, client, dial)).await?;
    Ok(Connected {
        stream: Upstream::Hbone(Box::new(io), guard),
        transport: Transport::Hbone,
        destination: Some(tunnel.identity.clone()),
        source: client,
        registration: None,
    })
}

/// Plain TCP from the pod's network namespace.
async fn plaintext(pod: &Pod, addr: SocketAddr) -> Result<Connected, Error> {
    let s = pod.netns.outbound_socket(&addr, None)?;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, s.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(Error::Connect { addr, source }),
        Err(_) => return Err(Error::Timeout(addr)),
    };
    let _ = tcp.set_nodelay(true);
    let source = tcp.local_addr().unwrap_or(addr);
    Ok(Connected {
        stream: Upstream::Tcp(tcp),
        transport: Transport::Plaintext,
        destination: None,
        registration: None,
        source,
    })
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Hbone(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Hbone(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Upstream::Hbone(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Hbone(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl WaitReadable for Upstream {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Upstream::Tcp(s) => s.poll_wait_readable(cx),
            Upstream::Hbone(s, _) => s.poll_wait_readable(cx),
        }
    }

    fn abort(&mut self) {
        match self {
            Upstream::Tcp(s) => s.abort(),
            Upstream::Hbone(s, _) => s.abort(),
        }
    }
}
