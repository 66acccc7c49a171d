//! The one admin/metrics HTTP server of the agent, the waypoint and the control
//! plane: GET only, typed replies (JSON from `Serialize` types the clients
//! deserialize, Prometheus text, plain text), a request head read within 10 s (also
//! the limit on an idle keep-alive connection), at most `MAX_CONNECTIONS` open at
//! once (more are closed at accept and reported to the handler), and an accept loop
//! that backs off instead of spinning when accept fails.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::backoff::Backoff;

/// A slow client must send its request head within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections open at once, and from one peer address: scrapers and
/// operators need a handful; one pod cannot hold them all.
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;

/// What a path answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    /// `v` as JSON with `status`.
    pub fn json_with<T: Serialize>(status: StatusCode, v: &T) -> Reply {
        match serde_json::to_vec_pretty(v) {
            Ok(mut body) => {
                body.push(b'\n');
                Reply {
                    status,
                    content_type: "application/json",
                    body: body.into(),
                }
            }
            Err(e) => Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding: {e}\n"),
            ),
        }
    }

    pub fn json<T: Serialize>(v: &T) -> Reply {
        Reply::json_with(StatusCode::OK, v)
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body.into()),
        }
    }

    /// The Prometheus text exposition format.
    pub fn metrics(body: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: Bytes::from(body),
        }
    }

    /// Readiness: 200 or 503.
    pub fn ready(ready: bool) -> Reply {
        if ready {
            Reply::text(StatusCode::OK, "ready\n")
        } else {
            Reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }

    pub fn not_found(hint: &str) -> Reply {
        Reply::text(StatusCode::NOT_FOUND, format!("not found; {hint}\n"))
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        if let Ok(v) = header::HeaderValue::from_str(self.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    }
}

/// Answers a path.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, path: &str) -> Reply;

    /// A connection was closed at accept: `MAX_CONNECTIONS` were open, or
    /// `MAX_CONNECTIONS_PER_PEER` from this peer (count it).
    fn refused(&self, peer: SocketAddr) {
        tracing::warn!(%peer, limit = MAX_CONNECTIONS, per_peer = MAX_CONNECTIONS_PER_PEER, "admin connection refused: too many open");
    }
}

impl<F: Fn(&str) -> Reply + Send + Sync + 'static> Handler for F {
    fn handle(&self, path: &str) -> Reply {
        self(path)
    }
}

fn respond(handler: &dyn Handler, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n").into_response();
    }
    handler.handle(req.uri().path()).into_response()
}

/// Binds with SO_REUSEPORT so that, during a surge upgrade, a new process can
/// listen before the old one has gone (both answer until it has).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    let mut backoff = Backoff::accept();
    let caps = crate::caps::Caps::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER);
    loop {
        let stream = match listener.accept().await {
            Ok((s, peer)) => {
                backoff.reset();
                match caps.admit(peer.ip()) {
                    Ok(place) => (s, place),
                    Err(_) => {
                        let _ = s.set_zero_linger();
                        handler.refused(peer);
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                backoff.wait().await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (stream, _permit) = stream;
            let svc = service_fn(move |req| {
                let r = respond(handler.as_ref(), &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_get_refuses_other_methods() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let handler = |path: &str| match path {
            "/stats" => Reply::json(&serde_json::json!({"ok": true})),
            _ => Reply::not_found("try /stats"),
        };
        tokio::spawn(serve(l, Arc::new(handler)));
        let ask = |method: &'static str, path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = ask("GET", "/stats").await;
        assert!(
            ok.starts_with("HTTP/1.1 200")
                && ok.contains("application/json")
                && ok.contains("\"ok\": true"),
            "{ok}"
        );
        assert!(ask("GET", "/nope").await.starts_with("HTTP/1.1 404"));
        assert!(ask("POST", "/stats").await.starts_with("HTTP/1.1 405"));
    }

    struct Counting(std::sync::atomic::AtomicUsize);
    impl Handler for Counting {
        fn handle(&self, _: &str) -> Reply {
            Reply::text(StatusCode::OK, "ok\n")
        }
        fn refused(&self, _: SocketAddr) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn read_to_end(s: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn connections_beyond_the_peer_cap_are_closed_and_counted() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let handler = Arc::new(Counting(Default::default()));
        tokio::spawn(serve(l, handler.clone()));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_PEER {
            held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Closed by the server without an answer (reset or EOF).
        let answer = read_to_end(&mut extra).await.unwrap_or_default();
        assert!(answer.is_empty(), "{answer:?}");
        assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        held.clear();
        // The places free up as the server sees those connections close.
        let mut answer = String::new();
        for _ in 0..500 {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = s
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            answer = String::from_utf8_lossy(&read_to_end(&mut s).await.unwrap_or_default()).into();
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_header_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(
            l,
            Arc::new(|_: &str| Reply::text(StatusCode::OK, "ok\n")),
        ));
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Nothing sent: the server's header timer (paused clock, advanced by
        // tokio when every task waits) closes it.
        let start = tokio::time::Instant::now();
        let got = read_to_end(&mut idle).await.unwrap_or_default();
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{got:?}"
        );
        assert!(
            start.elapsed() >= HEADER_READ_TIMEOUT,
            "closed by the timer, not before"
        );
    }
}
