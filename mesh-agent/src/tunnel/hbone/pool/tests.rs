//! The HBONE client pool against a real HBONE peer on 127.0.0.1 (TLS 1.3 with
//! client certificates, HTTP/2 CONNECT): connections are reused per key, a full
//! connection makes a new one, idle ones expire.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use mesh_model::{ca::Ca, identity::Identity};
use tokio::net::TcpListener;

use super::*;
use crate::{identity::manager::WorkloadCert, inpod::Netns, tls};

struct Peer {
    port: u16,
    client: Arc<rustls::sign::CertifiedKey>,
    roots: Arc<rustls::RootCertStore>,
    server_id: Identity,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn cert(ca: &Ca, id: &Identity) -> Arc<rustls::sign::CertifiedKey> {
    let now = std::time::SystemTime::now();
    let (chain, key) = ca
        .issue(
            id,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .expect("issue");
    WorkloadCert::from_pem(id, &[chain], &key)
        .expect("cert")
        .certified
}

/// Answers every CONNECT with 200 and holds the stream open; advertises
/// SETTINGS_MAX_CONCURRENT_STREAMS = `max_streams`.
async fn serve(l: TcpListener, acceptor: tokio_rustls::TlsAcceptor, max_streams: u32) {
    while let Ok((tcp, _)) = l.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let handshake = h2::server::Builder::new()
                .max_concurrent_streams(max_streams)
                .handshake(tls);
            let Ok(mut h2) = handshake.await else {
                return;
            };
            // The streams stay open as long as the connection.
            let mut open = Vec::new();
            while let Some(Ok((req, mut respond))) = h2.accept().await {
                let send: Result<h2::SendStream<Bytes>, _> =
                    respond.send_response(http::Response::new(()), false);
                open.push((req, send));
            }
        });
    }
}

async fn peer(name: &str) -> Peer {
    peer_with(name, 1000).await
}

/// Like `serve`, but the first connection refuses every stream after its first
/// (REFUSED_STREAM): a pooled connection its peer can no longer use.
async fn serve_going_stale(l: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    let mut first = true;
    while let Ok((tcp, _)) = l.accept().await {
        let acceptor = acceptor.clone();
        let stale = std::mem::replace(&mut first, false);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut h2) = h2::server::handshake(tls).await else {
                return;
            };
            let mut open = Vec::new();
            while let Some(Ok((req, mut respond))) = h2.accept().await {
                if stale && !open.is_empty() {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let send: Result<h2::SendStream<Bytes>, _> =
                    respond.send_response(http::Response::new(()), false);
                open.push((req, send));
            }
        });
    }
}

async fn peer_with(name: &str, max_streams: u32) -> Peer {
    peer_serving(name, move |l, a| tokio::spawn(serve(l, a, max_streams))).await
}

async fn peer_serving(
    name: &str,
    start: impl FnOnce(TcpListener, tokio_rustls::TlsAcceptor) -> tokio::task::JoinHandle<()>,
) -> Peer {
    let dir = std::env::temp_dir().join(format!("fm-pool-{name}-{}", std::process::id()));
    let ca = Ca::load_or_create(&dir, "cluster.local").expect("ca");
    let roots = tls::roots_from_pem(ca.root_pem()).expect("roots");
    let server_id: Identity = "spiffe://cluster.local/ns/shop/sa/server"
        .parse()
        .expect("id");
    let client_id: Identity = "spiffe://cluster.local/ns/shop/sa/client"
        .parse()
        .expect("id");
    let cfg =
        tls::server_config(Arc::new(Fixed(cert(&ca, &server_id))), roots.clone()).expect("tls");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    start(l, tokio_rustls::TlsAcceptor::from(cfg));
    Peer {
        port,
        client: cert(&ca, &client_id),
        roots,
        server_id,
        _dir: TempDir(dir),
    }
}

fn key(p: &Peer) -> Key {
    Key {
        source: "spiffe://cluster.local/ns/shop/sa/client"
            .parse()
            .expect("id"),
        destination: p.server_id.clone(),
        address: "127.0.0.1".parse().expect("ip"),
    }
}

async fn open(pool: &Pool, p: &Peer, netns: &Netns) -> (H2Io, StreamGuard) {
    let dial = Dial {
        netns,
        source_cert: p.client.clone(),
        roots: p.roots.clone(),
    };
    let target: SocketAddr = "198.19.2.10:8080".parse().expect("addr");
    let client: SocketAddr = "198.19.1.10:40000".parse().expect("addr");
    pool.connect(&key(p), target, client, dial)
        .await
        .expect("stream")
}

fn netns() -> Netns {
    crate::inpod::init_home().expect("home netns");
    Netns::open(std::path::Path::new("/proc/self/ns/net")).expect("own netns")
}

#[tokio::test]
async fn streams_share_a_connection_until_it_is_full() {
    let p = peer("reuse").await;
    let pool = Pool::new(Duration::from_secs(60))
        .with_port(p.port)
        .with_max_streams(2);
    let netns = netns();
    let a = open(&pool, &p, &netns).await;
    let b = open(&pool, &p, &netns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        1,
        "the second stream reuses the connection"
    );
    let c = open(&pool, &p, &netns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        2,
        "a full connection makes a new one"
    );
    drop((a, b));
    let _d = open(&pool, &p, &netns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        2,
        "freed places are used again"
    );
    assert_eq!(pool.counters.streams_opened.get(), 4);
    drop(c);
}

#[tokio::test]
async fn idle_connections_expire_busy_ones_stay() {
    let p = peer("expiry").await;
    let pool = Pool::new(Duration::ZERO).with_port(p.port);
    let netns = netns();
    let busy = open(&pool, &p, &netns).await;
    pool.expire_idle().await;
    let _second = open(&pool, &p, &netns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        1,
        "a connection with a stream stays"
    );
    drop((busy, _second));
    pool.expire_idle().await;
    let _third = open(&pool, &p, &netns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        2,
        "an idle connection expired"
    );
}

#[tokio::test]
async fn the_peers_stream_limit_opens_a_new_connection() {
    // The peer allows 2 streams per connection (ztunnel's allows 100), the pool 100:
    // the third stream must not queue inside h2 behind the first two.
    let p = peer_with("peer-limit", 2).await;
    let pool = Pool::new(Duration::from_secs(60)).with_port(p.port);
    let netns = netns();
    let first = open(&pool, &p, &netns).await;
    // The peer's SETTINGS arrive with the first exchange.
    let _second = open(&pool, &p, &netns).await;
    let third = tokio::time::timeout(DIAL_TIMEOUT / 2, open(&pool, &p, &netns))
        .await
        .expect("the third stream is not stuck behind the peer's limit");
    assert_eq!(pool.counters.connections_opened.get(), 2);
    drop((first, third));
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_costs_the_dial_timeout_not_forever() {
    // Accepts TCP and never answers the TLS handshake.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = l.accept().await {
            held.push(tcp);
        }
    });
    let p = peer("silent").await;
    let pool = Pool::new(Duration::from_secs(60)).with_port(port);
    let netns = netns();
    let dial = Dial {
        netns: &netns,
        source_cert: p.client.clone(),
        roots: p.roots.clone(),
    };
    let target: SocketAddr = "198.19.2.10:8080".parse().expect("addr");
    let client: SocketAddr = "198.19.1.10:40000".parse().expect("addr");
    let r = pool.connect(&key(&p), target, client, dial).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{:?}", r.err());
}

#[tokio::test]
async fn evicted_connections_take_no_new_stream() {
    let p = peer("evicted").await;
    let pool = Pool::new(Duration::from_secs(60)).with_port(p.port);
    let ns = netns();
    let first = open(&pool, &p, &ns).await;
    assert_eq!(pool.counters.connections_opened.get(), 1);
    // The workload at that address left (or is another identity now).
    assert_eq!(pool.evict(|_| false), 1);
    assert_eq!(pool.evict(|_| false), 0, "nothing left to evict");
    let _second = open(&pool, &p, &ns).await;
    assert_eq!(
        pool.counters.connections_opened.get(),
        2,
        "a new stream went to a new connection"
    );
    drop(first);
}

#[tokio::test]
async fn a_dead_pooled_connection_costs_a_retry_not_a_failed_stream() {
    let p = peer_serving("stale", |l, a| tokio::spawn(serve_going_stale(l, a))).await;
    let pool = Pool::new(Duration::from_secs(60)).with_port(p.port);
    let ns = netns();
    let _first = open(&pool, &p, &ns).await;
    // The pooled connection refuses new streams now: the stream is retried on a
    // new connection and succeeds.
    let _second = open(&pool, &p, &ns).await;
    assert_eq!(pool.counters.stale_retried.get(), 1);
    assert_eq!(pool.counters.connections_opened.get(), 2);
}

/// A TCP relay in front of a peer; `freeze()` makes every connection relayed so
/// far go silent (a node gone without a reset: the TCP connection stays up,
/// nothing answers) while new ones are relayed.
struct Relay {
    port: u16,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        use std::sync::atomic::AtomicU64;
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let generation = Arc::new(AtomicU64::new(0));
        let gen = generation.clone();
        tokio::spawn(async move {
            while let Ok((a, _)) = l.accept().await {
                let Ok(b) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let born = gen.load(Ordering::SeqCst);
                let (ar, aw) = a.into_split();
                let (br, bw) = b.into_split();
                tokio::spawn(relay_half(ar, bw, gen.clone(), born));
                tokio::spawn(relay_half(br, aw, gen.clone(), born));
            }
        });
        Relay { port, generation }
    }

    fn freeze(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies until the relay is frozen past `born`, then holds both sockets silently.
async fn relay_half(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    gen: Arc<std::sync::atomic::AtomicU64>,
    born: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = r.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if gen.load(Ordering::SeqCst) != born {
            let _held = (r, w);
            return std::future::pending().await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_from_the_pool() {
    let p = peer("frozen").await;
    let relay = Relay::start(p.port).await;
    let pool = Pool::new(Duration::from_secs(60))
        .with_port(relay.port)
        .with_keepalive(Duration::from_millis(50), Duration::from_millis(200));
    let ns = netns();
    let _first = open(&pool, &p, &ns).await;
    relay.freeze();
    // Waits for the counter (bounded), not for a time.
    tokio::time::timeout(Duration::from_secs(10), async {
        while pool.counters.keepalive_lost.get() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the silent peer's connection dropped");
    assert_eq!(pool.counters.connections_open.get(), 0);
    // The next stream goes to a new connection, not the dead one.
    let _second = open(&pool, &p, &ns).await;
    assert_eq!(pool.counters.connections_opened.get(), 2);
    assert_eq!(
        pool.counters.stale_retried.get(),
        0,
        "no stream met the dead one"
    );
}
