//! HTTP, gRPC and WebSocket peers for the waypoint tests: joins a pod's cgroup and
//! network namespace, then serves or calls. Results are JSON lines.
#![forbid(unsafe_code)]

use std::{fs::File, net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nix::sched::{setns, CloneFlags};

mod clients;
mod load;
mod raw;
mod server;

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
        /// `name:value` metadata sent with each unary call (repeatable).
        #[arg(long)]
        header: Vec<String>,
        /// Only the COUNT unary calls (no failing call, no stream).
        #[arg(long)]
        unary_only: bool,
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
            } => server::serve(name, http, grpc, ws, fail_path).await,
            Cmd::GrpcClient {
                to,
                count,
                header,
                unary_only,
            } => clients::grpc_client(to, count, &header, unary_only).await,
            Cmd::WsClient { to, count } => clients::ws_client(to, count).await,
            Cmd::Get {
                url,
                count,
                concurrency,
                header,
                method,
                h2,
                rate,
            } => load::get(url, count, concurrency, header, method, h2, rate).await,
            Cmd::Raw { to, send, wait_ms } => raw::raw(to, send, wait_ms).await,
            Cmd::RapidReset { to, streams } => raw::rapid_reset(to, streams).await,
        }
    })
}
