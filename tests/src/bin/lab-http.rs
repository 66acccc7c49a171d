//! HTTP, gRPC and WebSocket peers for the waypoint tests: joins a pod's cgroup and
//! network namespace, then serves or calls. Results are JSON lines.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn, Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use nix::sched::{setns, CloneFlags};
use tokio::net::{TcpListener, TcpStream};

pub mod echo {
    tonic::include_proto!("echo");
}

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    netns: Option<PathBuf>,
    #[arg(long)]
    cgroup: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP/1.1 + h2c echo server (JSON of the request), a gRPC server and a
    /// WebSocket echo server, each on its own port when given.
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 8080)]
        http: u16,
        #[arg(long)]
        grpc: Option<u16>,
        #[arg(long)]
        ws: Option<u16>,
        /// Always answer 503 on this path (an unhealthy endpoint).
        #[arg(long)]
        fail_path: Option<String>,
    },
    /// gRPC calls: COUNT unary calls, then one bidirectional stream of COUNT messages.
    GrpcClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// COUNT requests to URL on keep-alive connections (CONCURRENCY at a time);
    /// prints statuses and which servers answered.
    Get {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
        /// "name: value", repeatable.
        #[arg(long)]
        header: Vec<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        /// HTTP/2 with prior knowledge (h2c).
        #[arg(long)]
        h2: bool,
        /// Paced at this many requests/s in all (spread over the workers).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Sends raw bytes (\r\n escapes allowed), prints what comes back until the
    /// server closes or WAIT_MS pass without data.
    Raw {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        send: String,
        #[arg(long, default_value_t = 3000)]
        wait_ms: u64,
    },
    /// HTTP/2 rapid reset: STREAMS requests each cancelled at once.
    RapidReset {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        streams: u32,
    },
    /// WebSocket: COUNT text messages echoed.
    WsClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
}

/// Errors end the process with one line on stderr (never a backtrace, whatever
/// RUST_BACKTRACE says): the lab shows it when the failure was not expected.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-http: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(cg) = &cli.cgroup {
        std::fs::write(cg.join("cgroup.procs"), "0")
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    if let Some(ns) = &cli.netns {
        let f = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
    }
    // Threads start after setns, so all of them are in the pod's namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                name,
                http,
                grpc,
                ws,
                fail_path,
            } => serve(name, http, grpc, ws, fail_path).await,
            Cmd::GrpcClient { to, count } => grpc_client(to, count).await,
            Cmd::WsClient { to, count } => ws_client(to, count).await,
            Cmd::Get {
                url,
                count,
                concurrency,
                header,
                method,
                h2,
                rate,
            } => get(url, count, concurrency, header, method, h2, rate).await,
            Cmd::Raw { to, send, wait_ms } => raw(to, send, wait_ms).await,
            Cmd::RapidReset { to, streams } => rapid_reset(to, streams).await,
        }
    })
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Requests seen, by path and query (GET /_stats).
type Seen = Arc<Mutex<BTreeMap<String, u64>>>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn http_handler(
    name: Arc<String>,
    seen: Seen,
    fail: Arc<Option<String>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let key = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path == "/_stats" {
        let s = seen.lock().map(|m| m.clone()).unwrap_or_default();
        return Ok(Response::new(full(
            serde_json::to_string(&s).unwrap_or_default(),
        )));
    }
    let count = {
        let mut m = seen.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    };
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let mut status = StatusCode::OK;
    if fail.as_deref() == Some(path.as_str()) {
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
        (Some("stream"), Some(n)) => {
            // N chunks, 200 ms apart.
            let n: u32 = n.parse().unwrap_or(1);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..n {
                    if tx
                        .send(Ok(Frame::data(Bytes::from(format!("chunk {i}\n")))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let stream = tokio_stream_from(rx);
            return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
        }
        _ => {}
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let out = serde_json::json!({
        "server": *name,
        "method": method,
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body_bytes": body.len(),
        "count": count,
    });
    let mut resp = Response::new(full(out.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-served-by",
        name.parse()
            .unwrap_or_else(|_| "?".parse().expect("static")),
    );
    Ok(resp)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct EchoService {
    name: String,
}

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoService {
    async fn unary(
        &self,
        req: tonic::Request<echo::Msg>,
    ) -> Result<tonic::Response<echo::Msg>, tonic::Status> {
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

async fn serve(
    name: String,
    http: u16,
    grpc: Option<u16>,
    ws: Option<u16>,
    fail: Option<String>,
) -> Result<()> {
    let name = Arc::new(name);
    let fail = Arc::new(fail);
    let seen: Seen = Arc::default();
    let l = TcpListener::bind(("::", http))
        .await
        .with_context(|| format!("bind {http}"))?;
    let (n, s) = (name.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = l.accept().await else {
                continue;
            };
            // As Go's net/http, Envoy and tonic do. Without it, HTTP/2 responses
            // multiplexed on one connection (as a waypoint sends them) wait for
            // delayed ACKs (Nagle): +1.5 ms p50 measured through the waypoint.
            let _ = conn.set_nodelay(true);
            let (n, s, f) = (n.clone(), s.clone(), fail.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| http_handler(n.clone(), s.clone(), f.clone(), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
    if let Some(port) = grpc {
        let svc = echo::echo_server::EchoServer::new(EchoService {
            name: name.to_string(),
        });
        let addr: SocketAddr = ([0u16; 8], port).into();
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve(addr)
                .await
            {
                eprintln!("grpc server: {e}");
            }
        });
    }
    if let Some(port) = ws {
        let l = TcpListener::bind(("::", port))
            .await
            .with_context(|| format!("bind {port}"))?;
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = l.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(conn).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() {
                            let reply = format!(
                                "{}: {}",
                                name,
                                m.into_text().map(|t| t.to_string()).unwrap_or_default()
                            );
                            if ws
                                .send(tokio_tungstenite::tungstenite::Message::text(reply))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        } else if m.is_close() {
                            return;
                        }
                    }
                });
            }
        });
    }
    println!("listening http={http} grpc={grpc:?} ws={ws:?}");
    // Until stdin closes (the test drops the App).
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    Ok(())
}

async fn grpc_client(to: SocketAddr, count: u32) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{to}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .context("gRPC connect")?;
    let mut client = echo::echo_client::EchoClient::new(channel);
    let mut servers = BTreeMap::<String, u32>::new();
    let mut unary_ok = 0;
    let mut served_by = String::new();
    let start = Instant::now();
    for i in 0..count {
        let r = client
            .unary(echo::Msg {
                text: format!("hello {i}"),
                server: String::new(),
            })
            .await
            .context("unary call")?;
        served_by = r
            .metadata()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let m = r.into_inner();
        if m.text == format!("hello {i}") {
            unary_ok += 1;
        }
        *servers.entry(m.server).or_default() += 1;
    }
    let failed = client
        .unary(echo::Msg {
            text: "fail".into(),
            server: String::new(),
        })
        .await
        .err()
        .map(|s| (s.code() as i32, s.message().to_owned()));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let outbound = futures_util::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let mut inbound = client
        .bidi(outbound)
        .await
        .context("bidi call")?
        .into_inner();
    let mut bidi_ok = 0;
    let mut bidi_server = String::new();
    for i in 0..count {
        tx.send(echo::Msg {
            text: format!("msg {i}"),
            server: String::new(),
        })
        .await?;
        // One reply per message, before the next is sent: streaming both ways.
        match inbound.next().await {
            Some(Ok(m)) if m.text == format!("msg {i}") => {
                bidi_ok += 1;
                bidi_server = m.server;
            }
            other => anyhow::bail!("bidi reply {i}: {other:?}"),
        }
    }
    drop(tx);
    let end = inbound.next().await;
    let trailers_ok = end.is_none();
    println!(
        "{}",
        serde_json::json!({
            "unary_ok": unary_ok,
            "servers": servers,
            "served_by": served_by,
            "error_code": failed.as_ref().map(|f| f.0),
            "error_message": failed.map(|f| f.1),
            "bidi_ok": bidi_ok,
            "bidi_server": bidi_server,
            "stream_closed_cleanly": trailers_ok,
            "ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

async fn ws_client(to: SocketAddr, count: u32) -> Result<()> {
    let tcp = TcpStream::connect(to).await.context("connect")?;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{to}/ws"), tcp)
        .await
        .context("WebSocket handshake")?;
    let mut replies = Vec::new();
    for i in 0..count {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "m{i}"
        )))
        .await?;
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m))) => {
                replies.push(m.into_text().map(|t| t.to_string()).unwrap_or_default())
            }
            other => anyhow::bail!("reply {i}: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
    println!(
        "{}",
        serde_json::json!({"status": resp.status().as_u16(), "replies": replies})
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u32>,
    servers: BTreeMap<String, u32>,
    errors: BTreeMap<String, u32>,
    last_body: String,
    last_headers: BTreeMap<String, String>,
    latencies_us: Vec<u64>,
}

async fn get(
    url: String,
    count: u32,
    concurrency: u32,
    headers: Vec<String>,
    method: String,
    h2: bool,
    rate: Option<f64>,
) -> Result<()> {
    let uri: hyper::Uri = url.parse().context("url")?;
    let authority = uri.authority().context("url needs host:port")?.clone();
    let addr: SocketAddr = authority
        .as_str()
        .parse()
        .or_else(|_| format!("{}:80", authority.as_str()).parse())
        .context("url host must be an address")?;
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let per = count.div_ceil(concurrency.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let n = per.min(count.saturating_sub(w * per));
        let (uri, headers, method, tally, authority) = (
            uri.clone(),
            headers.clone(),
            method.clone(),
            tally.clone(),
            authority.clone(),
        );
        // Each worker sends one request per `period`, workers staggered.
        let period = rate.map(|r| Duration::from_secs_f64(f64::from(concurrency.max(1)) / r));
        let offset = period.map(|p| p.mul_f64(f64::from(w) / f64::from(concurrency.max(1))));
        tasks.push(tokio::spawn(async move {
            let mut sender: Option<Sender> = None;
            let first = tokio::time::Instant::now()
                + offset.unwrap_or_default()
                + Duration::from_millis(50);
            for i in 0..n {
                let scheduled = period.map(|p| first + p * i);
                if let Some(at) = scheduled {
                    tokio::time::sleep_until(at).await;
                }
                if sender.as_ref().is_none_or(|s| s.closed()) {
                    sender = connect(addr, h2).await.ok();
                }
                let Some(s) = sender.as_mut() else {
                    {
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        *t.errors.entry("connect".into()).or_default() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let mut b = Request::builder().method(method.as_str());
                b = if h2 {
                    b.uri(uri.clone())
                } else {
                    b.uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                        .header("host", authority.as_str())
                };
                for (k, v) in &headers {
                    b = b.header(k.as_str(), v.as_str());
                }
                let Ok(req) = b.body(Full::new(Bytes::new())) else {
                    continue;
                };
                // From the actual send: tokio's timer is 1 ms coarse, so the
                // scheduled instant would add up to a millisecond of its own.
                let t0 = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(30), s.send(req)).await;
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(Ok((status, served_by, hdrs, body))) => {
                        t.latencies_us.push(t0.elapsed().as_micros() as u64);
                        *t.statuses.entry(status).or_default() += 1;
                        *t.servers.entry(served_by).or_default() += 1;
                        t.last_body = body;
                        t.last_headers = hdrs;
                    }
                    Ok(Err(e)) => {
                        *t.errors.entry(e.to_string()).or_default() += 1;
                        sender = None;
                    }
                    Err(_) => {
                        *t.errors.entry("timeout".into()).or_default() += 1;
                        sender = None;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        t.latencies_us
            .get(
                ((t.latencies_us.len() as f64 * p) as usize)
                    .min(t.latencies_us.len().saturating_sub(1)),
            )
            .copied()
    };
    println!(
        "{}",
        serde_json::json!({
            "statuses": t.statuses,
            "servers": t.servers,
            "errors": t.errors,
            "last_body": t.last_body,
            "last_headers": t.last_headers,
            "p50_us": pct(0.5),
            "p99_us": pct(0.99),
            "ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

type Answer = (u16, String, BTreeMap<String, String>, String);

impl Sender {
    fn closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => s.send_request(req).await?,
        };
        let status = resp.status().as_u16();
        let served_by = resp
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            served_by,
            headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

async fn connect(addr: SocketAddr, h2: bool) -> Result<Sender> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await??;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    if h2 {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(s))
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(Sender::H1(s))
    }
}

async fn raw(to: SocketAddr, send: String, wait_ms: u64) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = send.replace("\\r", "\r").replace("\\n", "\n");
    let mut tcp = TcpStream::connect(to).await.context("connect")?;
    tcp.write_all(bytes.as_bytes()).await?;
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(wait_ms), tcp.read(&mut buf)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "response": String::from_utf8_lossy(&got),
            "closed": closed,
            "ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

async fn rapid_reset(to: SocketAddr, streams: u32) -> Result<()> {
    let tcp = TcpStream::connect(to).await.context("connect")?;
    let (client, conn) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let driver = tokio::spawn(conn);
    let mut client = client;
    let mut sent = 0;
    let mut refused = None;
    for i in 0..streams {
        match client.clone().ready().await {
            Ok(c) => client = c,
            Err(e) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
        }
        let req = Request::builder()
            .uri(format!("http://{to}/delay/1000"))
            .body(())
            .expect("request");
        match client.send_request(req, false) {
            Ok((resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
                sent += 1;
            }
            Err(e) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
        }
    }
    // The server may end the connection (GOAWAY): that is the defence.
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    println!(
        "{}",
        serde_json::json!({
            "reset_streams": sent,
            "refused": refused,
            "connection_ended": ended.is_ok(),
        })
    );
    Ok(())
}
