//! `serve`: the HTTP/1.1 + h2c echo server, the gRPC echo server and the
//! WebSocket echo server a lab pod runs.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn, Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};

use crate::echo;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Requests seen, by path and query (GET /_stats).
type Seen = Arc<Mutex<BTreeMap<String, u64>>>;

/// What every HTTP connection of one server shares.
struct Server {
    name: String,
    seen: Seen,
    /// Always answer 503 on this path (an unhealthy endpoint).
    fail: Option<String>,
}

pub async fn serve(
    name: String,
    http: u16,
    grpc: Option<u16>,
    ws: Option<u16>,
    fail: Option<String>,
) -> Result<()> {
    let l = TcpListener::bind(("::", http))
        .await
        .with_context(|| format!("bind {http}"))?;
    let server = Arc::new(Server {
        name: name.clone(),
        seen: Seen::default(),
        fail,
    });
    tokio::spawn(serve_http(l, server));
    if let Some(port) = grpc {
        tokio::spawn(serve_grpc(port, name.clone()));
    }
    if let Some(port) = ws {
        let l = TcpListener::bind(("::", port))
            .await
            .with_context(|| format!("bind {port}"))?;
        tokio::spawn(serve_ws(l, name));
    }
    println!("listening http={http} grpc={grpc:?} ws={ws:?}");
    // Until stdin closes (the test drops the App).
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    Ok(())
}

async fn serve_http(l: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((conn, _)) = l.accept().await else {
            continue;
        };
        // As Go's net/http, Envoy and tonic do. Without it, HTTP/2 responses
        // multiplexed on one connection (as a waypoint sends them) wait for
        // delayed ACKs (Nagle): +1.5 ms p50 measured through the waypoint.
        let _ = conn.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(server.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(conn), svc)
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// The echo: GET /_stats, /status/N, /delay/MS, /flaky/*, /stream/N, or JSON of
/// the request.
async fn handle(
    server: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/_stats" {
        let s = server.seen.lock().map(|m| m.clone()).unwrap_or_default();
        return Ok(Response::new(full(
            serde_json::to_string(&s).unwrap_or_default(),
        )));
    }
    let count = server.count(&req);
    let mut status = StatusCode::OK;
    if server.fail.as_deref() == Some(path.as_str()) {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("status"), Some(code)) => {
            status = code
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
        }
        (Some("delay"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        // Odd requests to the same flaky path fail: one retry turns them into 200.
        (Some("flaky"), Some(_)) if count % 2 == 1 => status = StatusCode::SERVICE_UNAVAILABLE,
        (Some("stream"), Some(n)) => return Ok(Response::new(chunks(n.parse().unwrap_or(1)))),
        _ => {}
    }
    let mut resp = Response::new(full(echo_json(&server.name, count, req).await.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-served-by",
        server
            .name
            .parse()
            .unwrap_or_else(|_| "?".parse().expect("static")),
    );
    Ok(resp)
}

impl Server {
    /// Counts the request by path and query; the count so far.
    fn count<B>(&self, req: &Request<B>) -> u64 {
        let key = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    }
}

/// The request as the server saw it, after reading its body.
async fn echo_json(
    name: &str,
    count: u64,
    req: Request<hyper::body::Incoming>,
) -> serde_json::Value {
    // A repeated header's values joined with ", " (as HTTP allows).
    let mut headers = BTreeMap::<String, String>::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.to_string())
            .and_modify(|e| *e = format!("{e}, {v}"))
            .or_insert(v);
    }
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    serde_json::json!({
        "server": name,
        "method": method,
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body_bytes": body.len(),
        "count": count,
    })
}

/// A streamed body of `n` chunks, 200 ms apart.
fn chunks(n: u32) -> Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for i in 0..n {
            let chunk = Frame::data(Bytes::from(format!("chunk {i}\n")));
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    BodyExt::boxed(StreamBody::new(stream))
}

struct EchoService {
    name: String,
}

async fn serve_grpc(port: u16, name: String) {
    let svc = echo::echo_server::EchoServer::new(EchoService { name });
    let addr: SocketAddr = ([0u16; 8], port).into();
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(svc)
        .serve(addr)
        .await
    {
        eprintln!("grpc server: {e}");
    }
}

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoService {
    async fn unary(
        &self,
        req: tonic::Request<echo::Msg>,
    ) -> Result<tonic::Response<echo::Msg>, tonic::Status> {
        // The request's x-* metadata, echoed back as echo-x-* (header filters).
        let echoed: Vec<(
            String,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        )> = req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                    Some((format!("echo-{}", k.as_str()), v.clone()))
                }
                _ => None,
            })
            .collect();
        let text = req.into_inner().text;
        if text == "fail" {
            return Err(tonic::Status::failed_precondition("asked to fail"));
        }
        let mut r = tonic::Response::new(echo::Msg {
            text,
            server: self.name.clone(),
        });
        r.metadata_mut().insert(
            "x-served-by",
            self.name
                .parse()
                .map_err(|_| tonic::Status::internal("name"))?,
        );
        for (k, v) in echoed {
            if let Ok(k) = k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>() {
                r.metadata_mut().append(k, v);
            }
        }
        Ok(r)
    }

    type BidiStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<echo::Msg, tonic::Status>> + Send>,
    >;

    async fn bidi(
        &self,
        req: tonic::Request<tonic::Streaming<echo::Msg>>,
    ) -> Result<tonic::Response<Self::BidiStream>, tonic::Status> {
        let name = self.name.clone();
        let mut inbound = req.into_inner();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                let reply = echo::Msg {
                    text: m.text,
                    server: name.clone(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        let out = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

async fn serve_ws(l: TcpListener, name: String) {
    let name = Arc::new(name);
    loop {
        let Ok((conn, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(ws_echo(conn, name.clone()));
    }
}

/// Echoes text messages, prefixed with the server's name, until the client closes.
async fn ws_echo(conn: TcpStream, name: Arc<String>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(conn).await else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            return;
        }
        if !m.is_text() {
            continue;
        }
        let text = m.into_text().map(|t| t.to_string()).unwrap_or_default();
        let reply = tokio_tungstenite::tungstenite::Message::text(format!("{name}: {text}"));
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}
