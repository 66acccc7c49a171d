//! Upstream HTTP connections of one source pod, kept per endpoint: HTTP/1.1
//! connections reused one request at a time, one multiplexed HTTP/2 connection.
//! Each connection is dialled like an L4 connection: over HBONE with the pod's
//! identity, directly to a pod of this node (after its L4 policy), or in plaintext
//! to a destination outside the mesh.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
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

use super::backend::EndpointStats;
use crate::{
    connect::{self, Upstream},
    datapath::DataPath,
    enforce::Judging,
    local::Pod,
    plan,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type UpBody = BoxBody<Bytes, BoxError>;

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

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The endpoint, or the way to it.
    Upstream,
    /// The client (its request body).
    Downstream,
    /// This waypoint refused (circuit breaker).
    Local,
}

/// Which retry policy may retry the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the destination's policy refused, the client failed, or a limit here.
    Never,
    /// `retryOn: connect-failure`: the request never reached the upstream.
    OnConnectFailure,
    /// `retryOn: reset`: the upstream reset it after it was sent.
    OnReset,
}

impl Error {
    pub fn side(&self) -> Side {
        match self {
            Error::Http(_, e) if e.is_user() => Side::Downstream,
            Error::Overflow(_) => Side::Local,
            _ => Side::Upstream,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            // A refusal by policy stays a refusal on every endpoint.
            Error::Denied(_) | Error::Overflow(_) => Retry::Never,
            Error::Http(_, e) if e.is_user() => Retry::Never,
            Error::Connect(..) => Retry::OnConnectFailure,
            Error::Http(_, e) if e.is_canceled() => Retry::OnConnectFailure,
            Error::Http(..) => Retry::OnReset,
        }
    }
}

/// Connects to `t.addr` from `t.pod` as the L4 path would (same plan, same
/// executors).
async fn dial(t: &Target<'_>) -> Result<Upstream, Error> {
    if t.direct {
        // Authorized per request already; the L4 plan would judge the pod itself.
        return crate::tunnel::inbound::connect_app(t.pod, t.addr, &t.dp.inputs.guard)
            .await
            .map(Upstream::Tcp)
            .ok_or_else(|| {
                Error::Connect(t.addr, "the application refused or did not answer".into())
            });
    }
    let route = {
        let state = t.dp.inputs.state.load();
        let is_local = |ip| t.dp.pods.contains(ip);
        plan::route(
            &plan::Inputs {
                state: &state,
                is_local: &is_local,
                trust_domain: &t.dp.inputs.trust_domain,
                tunnel: t.dp.inputs.tunnel,
            },
            t.addr,
        )
    }
    .map_err(|e| Error::Connect(t.addr, e.to_string()))?;
    let client = SocketAddr::new(t.pod.address_like(&t.addr.ip()).unwrap_or(t.addr.ip()), 0);
    match connect::connect(t.dp, t.pod, &route, client, Judging::PerRequest).await {
        Ok(c) => Ok(c.stream),
        Err(e) if e.denied() => Err(Error::Denied(t.addr)),
        Err(e) => Err(Error::Connect(t.addr, e.to_string())),
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
    pub dp: &'a DataPath,
    pub addr: SocketAddr,
    pub stats: Arc<EndpointStats>,
    pub max_connections: Option<u32>,
    /// Deliver to the application in `pod` itself (the destination node's L7).
    pub direct: bool,
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
                    let io = dial(&t).await?;
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
                let io = dial(&t).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_failed_and_whether_a_retry_may_help() {
        let a: SocketAddr = "198.19.2.10:8080".parse().expect("addr");
        let cases = [
            (
                "connect failed",
                Error::Connect(a, "refused".into()),
                Side::Upstream,
                Retry::OnConnectFailure,
            ),
            (
                "the destination's policy refused (401)",
                Error::Denied(a),
                Side::Upstream,
                Retry::Never,
            ),
            (
                "circuit breaker here",
                Error::Overflow(a),
                Side::Local,
                Retry::Never,
            ),
        ];
        for (name, e, side, retry) in cases {
            assert_eq!((e.side(), e.retry()), (side, retry), "{name}");
        }
    }
}
