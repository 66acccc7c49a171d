//! Upstream HTTP connections of one source pod, kept per endpoint: HTTP/1.1
//! connections reused one request at a time, one multiplexed HTTP/2 connection.
//! Each connection is dialled like an L4 connection: over HBONE with the pod's
//! identity, directly to a pod of this node (after its L4 policy), or in plaintext
//! to a destination outside the mesh.
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::backend::EndpointStats;
use crate::{
    shared::{Pod, Shared},
    tunnel::{
        hbone::{io::H2Io, pool},
        inbound,
    },
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type UpBody = BoxBody<Bytes, BoxError>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CERT_WAIT: Duration = Duration::from_secs(5);
const MAX_IDLE_PER_ENDPOINT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("{0} refused by the destination's policy")]
    Denied(SocketAddr),
    #[error("{0}: too many connections (circuit breaker maxConnections)")]
    Overflow(SocketAddr),
    #[error("HTTP with {0}: {1}")]
    Http(SocketAddr, hyper::Error),
}

impl Error {
    /// The client's own request body failed (malformed chunking, client gone).
    pub fn downstream(&self) -> bool {
        matches!(self, Error::Http(_, e) if e.is_user())
    }

    /// The request never reached the upstream: safe to retry whatever its method.
    pub fn before_request(&self) -> bool {
        match self {
            Error::Connect(..) | Error::Denied(..) | Error::Overflow(..) => true,
            Error::Http(_, e) => e.is_canceled(),
        }
    }
}

/// A dialled upstream byte stream.
pub enum Stream {
    Tcp(TcpStream),
    Hbone(Box<H2Io>, pool::StreamGuard),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Hbone(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Hbone(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Hbone(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Hbone(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Dials `addr` from `pod` as the L4 path would.
pub async fn dial(pod: &Pod, shared: &Shared, addr: SocketAddr) -> Result<Stream, Error> {
    let connect_err = |e: String| Error::Connect(addr, e);
    let state = shared.state.load();
    let target = state.workloads_by_ip.get(&addr.ip()).cloned();
    drop(state);
    let source_ip = pod.address_like(&addr.ip()).unwrap_or(addr.ip());
    if let Some(local) = shared.local_pod(addr.ip()) {
        if shared
            .authorize(&local, Some(&pod.identity), source_ip, addr.port())
            .is_err()
        {
            local.counters.inbound_denied.inc();
            return Err(Error::Denied(addr));
        }
        local.counters.inbound_captured.inc();
        return inbound::connect_app(&local, addr)
            .await
            .map(Stream::Tcp)
            .ok_or_else(|| connect_err("the application did not accept".into()));
    }
    match target {
        Some(w) if w.captured && shared.hbone => {
            let cert = shared
                .certs
                .wait(&pod.identity, CERT_WAIT)
                .await
                .ok_or_else(|| connect_err(format!("no certificate for {} yet", pod.identity)))?;
            let key = pool::Key {
                source: pod.identity.clone(),
                destination: shared.identity_of(&w),
                address: addr.ip(),
            };
            let dial = pool::Dial {
                netns: &pod.netns,
                source_cert: cert.certified.clone(),
                roots: shared.roots.clone(),
            };
            let client = SocketAddr::new(source_ip, 0);
            let (io, guard) = Box::pin(shared.pool.connect(&key, addr, client, dial))
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            pod.counters.outbound_hbone.inc();
            Ok(Stream::Hbone(Box::new(io), guard))
        }
        _ => {
            let s = pod
                .netns
                .outbound_socket(&addr, None)
                .map_err(|e| connect_err(e.to_string()))?;
            match tokio::time::timeout(CONNECT_TIMEOUT, s.connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    pod.counters.outbound_plaintext.inc();
                    Ok(Stream::Tcp(s))
                }
                Ok(Err(e)) => Err(connect_err(e.to_string())),
                Err(_) => Err(connect_err(format!("timed out after {CONNECT_TIMEOUT:?}"))),
            }
        }
    }
}

/// Counts an open upstream connection until dropped.
struct ConnSlot(Arc<EndpointStats>);
impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(
    stats: &Arc<EndpointStats>,
    max: Option<u32>,
    addr: SocketAddr,
) -> Result<ConnSlot, Error> {
    let n = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = ConnSlot(stats.clone());
    match max {
        Some(m) if n > m => Err(Error::Overflow(addr)),
        _ => Ok(slot),
    }
}

/// The upstream connections of one source pod.
#[derive(Default)]
pub struct Clients {
    h1: Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<UpBody>>>>,
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<UpBody>>>,
}

pub struct Target<'a> {
    pub pod: &'a Pod,
    pub shared: &'a Shared,
    pub addr: SocketAddr,
    pub stats: Arc<EndpointStats>,
    pub max_connections: Option<u32>,
}

impl Clients {
    fn idle_h1(&self, addr: SocketAddr) -> Option<http1::SendRequest<UpBody>> {
        let mut m = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let list = m.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_h1(self: &Arc<Self>, addr: SocketAddr, mut s: http1::SendRequest<UpBody>) {
        let me = Arc::downgrade(self);
        // Back in the pool once the response body is read; dropped if it closes.
        tokio::spawn(async move {
            if s.ready().await.is_err() {
                return;
            }
            let Some(me) = me.upgrade() else { return };
            let mut m = me.h1.lock().unwrap_or_else(|p| p.into_inner());
            let list = m.entry(addr).or_default();
            if list.len() < MAX_IDLE_PER_ENDPOINT {
                list.push(s);
            }
        });
    }

    /// Sends a request (URI in origin form for HTTP/1.1, absolute for HTTP/2).
    pub async fn send(
        self: &Arc<Self>,
        t: Target<'_>,
        req: Request<UpBody>,
        h2: bool,
        upgrade: bool,
    ) -> Result<Response<Incoming>, Error> {
        let addr = t.addr;
        if h2 {
            let existing = {
                let m = self.h2.lock().unwrap_or_else(|p| p.into_inner());
                m.get(&addr).filter(|s| !s.is_closed()).cloned()
            };
            let mut sender = match existing {
                Some(s) => s,
                None => {
                    let slot = take_slot(&t.stats, t.max_connections, addr)?;
                    let io = dial(t.pod, t.shared, addr).await?;
                    let (s, conn) = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .initial_stream_window_size(1 << 20)
                        .initial_connection_window_size(4 << 20)
                        .keep_alive_interval(Duration::from_secs(30))
                        .handshake(TokioIo::new(io))
                        .await
                        .map_err(|e| Error::Http(addr, e))?;
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Err(e) = conn.await {
                            tracing::debug!(upstream = %addr, "HTTP/2 upstream connection ended: {e}");
                        }
                    });
                    let mut m = self.h2.lock().unwrap_or_else(|p| p.into_inner());
                    m.insert(addr, s.clone());
                    s
                }
            };
            return sender
                .send_request(req)
                .await
                .map_err(|e| Error::Http(addr, e));
        }
        let mut sender = match (!upgrade).then(|| self.idle_h1(addr)).flatten() {
            Some(s) => s,
            None => {
                let slot = take_slot(&t.stats, t.max_connections, addr)?;
                let io = dial(t.pod, t.shared, addr).await?;
                let (s, conn) = http1::Builder::new()
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| Error::Http(addr, e))?;
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(upstream = %addr, "HTTP/1.1 upstream connection ended: {e}");
                    }
                });
                s
            }
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Http(addr, e))?;
        if !upgrade {
            self.put_h1(addr, sender);
        }
        Ok(resp)
    }
}
