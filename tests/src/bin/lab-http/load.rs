//! `get`: COUNT requests on keep-alive connections, CONCURRENCY at a time,
//! optionally paced; prints statuses, which servers answered and latencies.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// What every worker sends.
struct Load {
    uri: hyper::Uri,
    authority: String,
    addr: SocketAddr,
    headers: Vec<(String, String)>,
    method: String,
    h2: bool,
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

type Shared = Arc<Mutex<Tally>>;

pub async fn get(
    url: String,
    count: u32,
    concurrency: u32,
    headers: Vec<String>,
    method: String,
    h2: bool,
    rate: Option<f64>,
) -> Result<()> {
    let load = Arc::new(Load::new(&url, &headers, method, h2)?);
    let tally = Shared::default();
    let workers = concurrency.max(1);
    let per = count.div_ceil(workers);
    // Each worker sends one request per `period`, workers staggered.
    let period = rate.map(|r| Duration::from_secs_f64(f64::from(workers) / r));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let n = per.min(count.saturating_sub(w * per));
        let offset = period.map(|p| p.mul_f64(f64::from(w) / f64::from(workers)));
        let first =
            tokio::time::Instant::now() + offset.unwrap_or_default() + Duration::from_millis(50);
        let schedule = move |i: u32| period.map(|p| first + p * i);
        tasks.push(tokio::spawn(worker(
            load.clone(),
            tally.clone(),
            n,
            schedule,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    report(&mut t, start.elapsed());
    Ok(())
}

impl Load {
    fn new(url: &str, headers: &[String], method: String, h2: bool) -> Result<Load> {
        let uri: hyper::Uri = url.parse().context("url")?;
        let authority = uri.authority().context("url needs host:port")?.to_string();
        let addr: SocketAddr = authority
            .parse()
            .or_else(|_| format!("{authority}:80").parse())
            .context("url host must be an address")?;
        let headers = headers
            .iter()
            .filter_map(|h| {
                h.split_once(':')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        Ok(Load {
            uri,
            authority,
            addr,
            headers,
            method,
            h2,
        })
    }

    fn request(&self) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder().method(self.method.as_str());
        b = if self.h2 {
            b.uri(self.uri.clone())
        } else {
            b.uri(self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .header("host", self.authority.as_str())
        };
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        Ok(b.body(Full::new(Bytes::new()))?)
    }
}

/// `n` requests, each at its scheduled instant when paced; reconnects when the
/// connection closes or fails.
async fn worker(
    load: Arc<Load>,
    tally: Shared,
    n: u32,
    schedule: impl Fn(u32) -> Option<tokio::time::Instant>,
) {
    let mut sender: Option<Sender> = None;
    for i in 0..n {
        if let Some(at) = schedule(i) {
            tokio::time::sleep_until(at).await;
        }
        if sender.as_ref().is_none_or(|s| s.closed()) {
            sender = connect(load.addr, load.h2).await.ok();
        }
        let Some(s) = sender.as_mut() else {
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .error("connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(req) = load.request() else {
            continue;
        };
        // From the actual send: tokio's timer is 1 ms coarse, so the
        // scheduled instant would add up to a millisecond of its own.
        let t0 = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(30), s.send(req)).await;
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(Ok(answer)) => t.record(answer, t0.elapsed()),
            Ok(Err(e)) => {
                t.error(&e.to_string());
                sender = None;
            }
            Err(_) => {
                t.error("timeout");
                sender = None;
            }
        }
    }
}

impl Tally {
    fn record(&mut self, a: Answer, took: Duration) {
        self.latencies_us.push(took.as_micros() as u64);
        *self.statuses.entry(a.status).or_default() += 1;
        *self.servers.entry(a.served_by).or_default() += 1;
        self.last_body = a.body;
        self.last_headers = a.headers;
    }

    fn error(&mut self, what: &str) {
        *self.errors.entry(what.to_string()).or_default() += 1;
    }
}

fn report(t: &mut Tally, took: Duration) {
    t.latencies_us.sort_unstable();
    let l = &t.latencies_us;
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
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
            "ms": took.as_millis() as u64,
        })
    );
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

struct Answer {
    status: u16,
    served_by: String,
    headers: BTreeMap<String, String>,
    body: String,
}

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
        Ok(Answer {
            status,
            served_by,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
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
