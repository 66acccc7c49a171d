//! The HBONE client: a pool of mTLS HTTP/2 connections per (source identity,
//! destination identity, destination address), each multiplexing up to
//! MAX_STREAMS_PER_CONNECTION CONNECT streams, closed after an idle period.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;

use super::{
    io::H2Io, keepalive::Keepalive, CONNECTION_WINDOW, DIAL_TIMEOUT, MAX_FRAME,
    MAX_STREAMS_PER_CONNECTION, REASON_HEADER, STREAM_WINDOW,
};
use crate::{
    metrics::{Counter, Gauge},
    tls,
};
use mesh_model::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "connecting to HBONE port {0}: {1}; is port 15008 reachable (NetworkPolicy, node down)?"
    )]
    Connect(SocketAddr, std::io::Error),
    #[error("HBONE with {0}: no answer within {DIAL_TIMEOUT:?} (connect, handshake or CONNECT)")]
    Timeout(SocketAddr),
    #[error("TLS with {peer} ({addr}): {source}")]
    Tls {
        addr: SocketAddr,
        peer: Identity,
        source: std::io::Error,
    },
    #[error("TLS settings: {0}")]
    TlsConfig(#[from] tls::Error),
    #[error("HTTP/2 with {0}: {1}")]
    H2(SocketAddr, h2::Error),
    #[error("{addr} refused the tunnel: HTTP {status} {reason}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        reason: String,
    },
    #[error("in-pod socket: {0}")]
    Socket(#[from] crate::inpod::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub source: Identity,
    pub destination: Identity,
    pub address: IpAddr,
}

struct Conn {
    send: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    last_used: Instant,
}

/// Holds one stream's place on its connection until dropped.
pub struct StreamGuard(Arc<AtomicUsize>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct PoolCounters {
    pub connections_opened: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    pub streams_opened: Counter,
    pub refused: Counter,
    /// Streams retried on a new connection because a pooled one was dead.
    pub stale_retried: Counter,
    /// Connections dropped because the peer stopped answering keepalive PINGs.
    pub keepalive_lost: Counter,
}

impl PoolCounters {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        let c = self;
        r.register(
            "hbone_connections_opened",
            "HBONE client connections opened",
            c.connections_opened.clone(),
        );
        r.register(
            "hbone_connections_open",
            "HBONE client connections open now",
            c.connections_open.clone(),
        );
        r.register(
            "hbone_streams_opened",
            "HBONE CONNECT streams opened",
            c.streams_opened.clone(),
        );
        r.register(
            "hbone_streams_refused",
            "HBONE CONNECT streams the peer refused",
            c.refused.clone(),
        );
        r.register(
            "hbone_stale_connections_retried",
            "Streams retried on a new connection because a pooled one was dead",
            c.stale_retried.clone(),
        );
        r.register(
            "hbone_keepalive_lost",
            "HBONE client connections dropped: the peer stopped answering keepalive PINGs",
            c.keepalive_lost.clone(),
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections_opened": self.connections_opened.get(),
            "connections_open": self.connections_open.get(),
            "streams_opened": self.streams_opened.get(),
            "refused": self.refused.get(),
            "stale_retried": self.stale_retried.get(),
            "keepalive_lost": self.keepalive_lost.get(),
        })
    }
}

/// Pooled connections are PINGed every 20 s; a peer silent for 10 s more is gone.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(10));

pub struct Pool {
    keys: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Vec<Conn>>>>>,
    idle: Duration,
    /// CONNECT streams one connection carries at most.
    max_streams: usize,
    /// The peers' HBONE port (15008; another only in tests).
    port: u16,
    /// PING interval and how long a PONG may take.
    keepalive: (Duration, Duration),
    pub counters: PoolCounters,
}

/// What a new connection needs: where the pod's socket comes from and TLS.
pub struct Dial<'a> {
    pub netns: &'a crate::inpod::Netns,
    pub source_cert: Arc<rustls::sign::CertifiedKey>,
    pub roots: Arc<rustls::RootCertStore>,
}

impl Pool {
    pub fn new(idle: Duration) -> Pool {
        Pool {
            keys: Mutex::default(),
            idle,
            max_streams: MAX_STREAMS_PER_CONNECTION,
            port: mesh_common::ports::HBONE,
            keepalive: KEEPALIVE,
            counters: PoolCounters::default(),
        }
    }

    /// Keepalive PINGs every `interval`, answered within `timeout` (tests).
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Pool {
        self.keepalive = (interval, timeout);
        self
    }

    /// At most `n` streams per connection (tests).
    pub fn with_max_streams(mut self, n: usize) -> Pool {
        self.max_streams = n.max(1);
        self
    }

    /// Peers listen on `port` (tests).
    pub fn with_port(mut self, port: u16) -> Pool {
        self.port = port;
        self
    }

    /// Opens a CONNECT stream to `target` through a pooled connection for `key`.
    /// A pooled connection that turns out dead (its peer went away without a
    /// reset, its address now another pod's) costs one retry on a new connection,
    /// never a failed stream.
    pub async fn connect(
        &self,
        key: &Key,
        target: SocketAddr,
        client: SocketAddr,
        dial: Dial<'_>,
    ) -> Result<(H2Io, StreamGuard), Error> {
        let (send, guard, reused) = self.checkout(key, &dial, false).await?;
        match self.stream(send.0, key, target, client).await {
            Err(Error::H2(..) | Error::Timeout(_)) if reused => {
                send.1.store(true, Ordering::Relaxed);
                drop(guard);
                self.counters.stale_retried.inc();
                tracing::debug!(destination = %key.destination, address = %key.address, "pooled HBONE connection was dead; retrying on a new one");
                let (send, guard, _) = self.checkout(key, &dial, true).await?;
                let io = self.stream(send.0, key, target, client).await?;
                Ok((io, guard))
            }
            r => r.map(|io| (io, guard)),
        }
    }

    /// A connection with room for one more stream (a new one if `fresh`): its
    /// sender and closed flag, the stream's place, and whether it was pooled.
    async fn checkout(
        &self,
        key: &Key,
        dial: &Dial<'_>,
        fresh: bool,
    ) -> Result<((SendRequest<Bytes>, Arc<AtomicBool>), StreamGuard, bool), Error> {
        let hbone = SocketAddr::new(key.address, self.port);
        let slot = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.entry(key.clone()).or_default().clone()
        };
        let mut conns = slot.lock().await;
        conns.retain(|c| !c.closed.load(Ordering::Relaxed));
        // The peer's SETTINGS_MAX_CONCURRENT_STREAMS bounds ours: a stream
        // beyond it would wait inside h2 until an earlier one closed.
        let found = conns.iter().position(|c| {
            let limit = self.max_streams.min(c.send.current_max_send_streams());
            !fresh && c.streams.load(Ordering::Relaxed) < limit
        });
        let (at, reused) = match found {
            Some(i) => (i, true),
            None => {
                let c = tokio::time::timeout(DIAL_TIMEOUT, self.open(key, hbone, dial))
                    .await
                    .map_err(|_| Error::Timeout(hbone))??;
                conns.push(c);
                (conns.len() - 1, false)
            }
        };
        let conn = &mut conns[at];
        conn.last_used = Instant::now();
        conn.streams.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard(conn.streams.clone());
        Ok(((conn.send.clone(), conn.closed.clone()), guard, reused))
    }

    /// One CONNECT stream on `send`.
    async fn stream(
        &self,
        send: SendRequest<Bytes>,
        key: &Key,
        target: SocketAddr,
        client: SocketAddr,
    ) -> Result<H2Io, Error> {
        let hbone = SocketAddr::new(key.address, self.port);
        let mut send = tokio::time::timeout(DIAL_TIMEOUT, send.ready())
            .await
            .map_err(|_| Error::Timeout(hbone))?
            .map_err(|e| Error::H2(hbone, e))?;
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(target.to_string())
            .header("forwarded", format!("for=\"{client}\""))
            .body(())
            .map_err(|e| Error::Refused {
                addr: hbone,
                status: 0,
                reason: e.to_string(),
            })?;
        let (resp, stream) = send
            .send_request(req, false)
            .map_err(|e| Error::H2(hbone, e))?;
        self.counters.streams_opened.inc();
        let resp = tokio::time::timeout(DIAL_TIMEOUT, resp)
            .await
            .map_err(|_| Error::Timeout(hbone))?
            .map_err(|e| Error::H2(hbone, e))?;
        if resp.status() != http::StatusCode::OK {
            self.counters.refused.inc();
            let reason = resp
                .headers()
                .get(REASON_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            return Err(Error::Refused {
                addr: hbone,
                status: resp.status().as_u16(),
                reason,
            });
        }
        Ok(H2Io::new(stream, resp.into_body()))
    }

    /// Drops pooled connections whose key `keep` no longer wants (the workload at
    /// that address is gone or is another identity now): streams open on them run
    /// on; no new stream is put on them.
    pub fn evict(&self, keep: impl Fn(&Key) -> bool) -> usize {
        let gone: Vec<Key> = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.keys().filter(|k| !keep(k)).cloned().collect()
        };
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in &gone {
            keys.remove(k);
        }
        gone.len()
    }

    async fn open(&self, key: &Key, hbone: SocketAddr, dial: &Dial<'_>) -> Result<Conn, Error> {
        let sock: TcpSocket = dial.netns.outbound_socket(&hbone, None)?;
        let tcp = sock
            .connect(hbone)
            .await
            .map_err(|e| Error::Connect(hbone, e))?;
        let cfg = tls::client_config(
            dial.source_cert.clone(),
            key.destination.clone(),
            dial.roots.clone(),
        )?;
        let name = ServerName::IpAddress(key.address.into());
        let tls_stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|source| Error::Tls {
                addr: hbone,
                peer: key.destination.clone(),
                source,
            })?;
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(|e| Error::H2(hbone, e))?;
        let closed = Arc::new(AtomicBool::new(false));
        let done = closed.clone();
        let peer = key.destination.clone();
        let open = self.counters.connections_open.clone();
        let lost = self.counters.keepalive_lost.clone();
        let (interval, timeout) = self.keepalive;
        let keepalive = Keepalive::new(connection.ping_pong(), interval, timeout).until_lost();
        open.inc();
        tokio::spawn(async move {
            tokio::select! {
                r = &mut connection => if let Err(e) = r {
                    tracing::debug!(%peer, "HBONE connection ended: {e}");
                },
                () = keepalive => {
                    lost.inc();
                    tracing::info!(%peer, %hbone, "HBONE connection dropped: no answer to a keepalive PING");
                }
            }
            done.store(true, Ordering::Relaxed);
            open.dec();
        });
        self.counters.connections_opened.inc();
        tracing::debug!(source = %key.source, destination = %key.destination, %hbone, "HBONE connection opened");
        Ok(Conn {
            send,
            streams: Arc::new(AtomicUsize::new(0)),
            closed,
            last_used: Instant::now(),
        })
    }

    /// Closes connections idle for longer than the idle timeout.
    pub async fn expire_idle(&self) {
        let slots: Vec<Arc<tokio::sync::Mutex<Vec<Conn>>>> = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.values().cloned().collect()
        };
        for slot in slots {
            let mut conns = slot.lock().await;
            conns.retain(|c| {
                !c.closed.load(Ordering::Relaxed)
                    && (c.streams.load(Ordering::Relaxed) > 0 || c.last_used.elapsed() < self.idle)
            });
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, slot| slot.try_lock().map(|c| !c.is_empty()).unwrap_or(true));
    }
}

#[cfg(test)]
mod tests;
