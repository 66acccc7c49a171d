//! A pod's application in the lab: joins a pod's cgroup and network namespace, then
//! serves or dials. Output is one line per event, JSON for results, so tests and the
//! bench parse it.
#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{BufRead, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sched::{setns, CloneFlags};
use sha2::{Digest, Sha256};

mod polled;
mod steady;

#[derive(Parser)]
struct Cli {
    /// Network namespace file to enter.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// cgroup v2 directory to join.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Non-blocking sockets waited on with poll(2), as an epoll application's
    /// (rr, stream and the echo and sink servers).
    #[arg(long)]
    poll: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo server on every given port ([::]:port, dual stack); prints each peer.
    Serve {
        #[arg(long, value_delimiter = ',')]
        port: Vec<u16>,
        /// Ports that count and discard instead of echoing (reply: 8-byte count at EOF).
        #[arg(long, value_delimiter = ',')]
        sink: Vec<u16>,
        /// Ports that accept and hold connections without reading (no thread each).
        #[arg(long, value_delimiter = ',')]
        idle: Vec<u16>,
    },
    /// Open CONNS connections and keep them open until stdin closes.
    HoldMany {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        conns: u32,
    },
    /// Send N bytes, read the echo, print checksums of both directions.
    Connect {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        bytes: u64,
        /// Send this text repeated instead of random bytes (a marker to look for).
        #[arg(long)]
        text: Option<String>,
    },
    /// CONNS connections at once, BYTES echoed on each, checked.
    Parallel {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        conns: u32,
        #[arg(long, default_value_t = 65536)]
        bytes: usize,
    },
    /// Keep one connection open; each stdin line is echoed through it.
    Hold {
        #[arg(long)]
        to: SocketAddr,
    },
    /// N connections one after another, 1 byte echoed on each.
    Churn {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
    },
    /// Round trips of SIZE bytes on one connection: latency percentiles (us).
    Rr {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 2000)]
        count: u32,
    },
    /// New connection + 1-byte round trip, COUNT times: latency percentiles (us).
    Connlat {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 500)]
        count: u32,
    },
    /// Steady load: a new connection echoing TEXT every EVERY_MS, COUNT times, while
    /// HELD connections each echo TEXT every HELD_EVERY_MS; prints what failed.
    Steady {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 10)]
        every_ms: u64,
        #[arg(long, default_value_t = 0)]
        held: u32,
        #[arg(long, default_value_t = 50)]
        held_every_ms: u64,
        #[arg(long, default_value = "STEADY")]
        text: String,
    },
    /// One stream of BYTES to a sink port: throughput.
    Stream {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 256 << 20)]
        bytes: u64,
    },
}

/// Errors end the process with one line on stderr (never a backtrace, whatever
/// RUST_BACKTRACE says): the lab shows it when the failure was not expected.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-app: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    if cli.poll {
        polled::enable();
    }
    if let Some(cg) = &cli.cgroup {
        std::fs::write(cg.join("cgroup.procs"), "0")
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    if let Some(ns) = &cli.netns {
        let f = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
    }
    match cli.cmd {
        Cmd::Serve { port, sink, idle } => serve(&port, &sink, &idle),
        Cmd::HoldMany { to, conns } => hold_many(to, conns),
        Cmd::Connect { to, bytes, text } => connect(to, bytes, text),
        Cmd::Parallel { to, conns, bytes } => parallel(to, conns, bytes),
        Cmd::Hold { to } => hold(to),
        Cmd::Churn { to, count } => churn(to, count),
        Cmd::Rr { to, size, count } => rr(to, size, count),
        Cmd::Connlat { to, count } => connlat(to, count),
        Cmd::Stream { to, bytes } => stream(to, bytes),
        Cmd::Steady {
            to,
            count,
            every_ms,
            held,
            held_every_ms,
            text,
        } => steady::steady(to, (count, every_ms), (held, held_every_ms), &text),
    }
}

fn listen(port: u16) -> Result<TcpListener> {
    // std binds [::] dual-stack on Linux by default (bindv6only=0).
    TcpListener::bind(("::", port)).with_context(|| format!("bind [::]:{port}"))
}

/// Prints `open N` (and `refused M` when the far end refused or reset some).
fn hold_many(to: SocketAddr, conns: u32) -> Result<()> {
    let mut held = Vec::with_capacity(conns as usize);
    let mut refused = 0u32;
    for i in 0..conns {
        match TcpStream::connect_timeout(&to, Duration::from_secs(10)) {
            Ok(c) => held.push(c),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                refused += 1
            }
            Err(e) => return Err(e).with_context(|| format!("connection {i}")),
        }
    }
    if refused > 0 {
        println!("open {} refused {refused}", held.len());
    } else {
        println!("open {}", held.len());
    }
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

fn serve(ports: &[u16], sinks: &[u16], idle: &[u16]) -> Result<()> {
    let mut handles = Vec::new();
    for &p in idle {
        let l = listen(p)?;
        handles.push(thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming().flatten() {
                held.push(conn);
            }
        }));
    }
    for (&p, sink) in ports
        .iter()
        .map(|p| (p, false))
        .chain(sinks.iter().map(|p| (p, true)))
    {
        let l = listen(p)?;
        handles.push(thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let peer = conn.peer_addr().map(canonical).unwrap_or_default();
                let local = conn.local_addr().map(canonical).unwrap_or_default();
                println!("accepted {peer} {local}");
                let _ = std::io::stdout().flush();
                thread::spawn(move || if sink { sink_conn(conn) } else { echo(conn) });
            }
        }));
    }
    println!("listening");
    std::io::stdout().flush()?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// `198.19.1.2:80` rather than `[::ffff:198.19.1.2]:80` from a dual-stack socket.
fn canonical(a: SocketAddr) -> String {
    SocketAddr::new(a.ip().to_canonical(), a.port()).to_string()
}

fn echo(c: TcpStream) {
    let _ = c.set_nodelay(true);
    let Ok(mut c) = polled::Conn::new(c) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn sink_conn(c: TcpStream) {
    let Ok(mut c) = polled::Conn::new(c) else {
        return;
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = c.write_all(&total.to_be_bytes());
}

/// Deterministic bytes (xorshift), so both ends could regenerate them.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn parallel(to: SocketAddr, conns: u32, bytes: usize) -> Result<()> {
    // All connect first, then all send: the streams are open at the same time.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(conns as usize));
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let barrier = barrier.clone();
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || -> Result<()> {
                    let c = TcpStream::connect_timeout(&to, Duration::from_secs(20));
                    barrier.wait();
                    let mut c = c?;
                    c.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let mut state = 0x1234_5678_9abc_def0u64 ^ u64::from(i);
                    let mut msg = vec![0u8; bytes];
                    fill(&mut msg, &mut state);
                    let mut w = c.try_clone()?;
                    let m2 = msg.clone();
                    let writer = thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || w.write_all(&m2))?;
                    let mut back = vec![0u8; bytes];
                    c.read_exact(&mut back)?;
                    writer
                        .join()
                        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
                    if back != msg {
                        bail!("connection {i}: echo differs");
                    }
                    Ok(())
                })
        })
        .collect::<std::io::Result<_>>()?;
    let results = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("panicked"))?)
        .collect::<Vec<_>>();
    tally(results);
    Ok(())
}

/// Prints {"ok", "failed", "first_error"} for a set of attempts.
fn tally(results: impl IntoIterator<Item = Result<()>>) {
    let (mut ok, mut failed, mut first_error) = (0u32, 0u32, None);
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"ok": ok, "failed": failed, "first_error": first_error})
    );
}

fn connect(to: SocketAddr, bytes: u64, text: Option<String>) -> Result<()> {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connect {to}"))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let local = c.local_addr()?;
    let peer = c.peer_addr()?;
    let mut w = c.try_clone()?;
    let writer = thread::spawn(move || -> Result<String> {
        let mut h = Sha256::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            match &text {
                Some(t) => {
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = t.as_bytes()[i % t.len().max(1)];
                    }
                }
                None => fill(&mut buf[..n], &mut state),
            }
            w.write_all(&buf[..n])?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        w.shutdown(Shutdown::Write)?;
        Ok(format!("{:x}", h.finalize()))
    });
    let mut r = c;
    let mut h = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).context("reading the echo")?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    let sent_sha = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    println!(
        "{}",
        serde_json::json!({"sent": bytes, "received": got, "sent_sha256": sent_sha,
            "received_sha256": format!("{:x}", h.finalize()), "local": local.to_string(), "peer": peer.to_string()})
    );
    Ok(())
}

fn hold(to: SocketAddr) -> Result<()> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connect {to}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    println!("connected {}", c.local_addr()?);
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let msg = format!("{line}\n");
        c.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).context("echo")?;
        println!("echo {}", String::from_utf8_lossy(&back).trim_end());
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn one_byte(to: SocketAddr) -> Result<()> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"x")?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    if b != *b"x" {
        bail!("wrong echo");
    }
    Ok(())
}

fn churn(to: SocketAddr, count: u32) -> Result<()> {
    tally((0..count).map(|_| one_byte(to)));
    Ok(())
}

fn percentiles(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    serde_json::json!({"count": v.len(), "p50_us": p(0.5), "p99_us": p(0.99), "max_us": p(1.0)})
}

fn rr(to: SocketAddr, size: usize, count: u32) -> Result<()> {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut c = polled::Conn::new(c)?;
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count + 100 {
        let t = Instant::now();
        c.write_all(&msg)?;
        c.read_exact(&mut back)?;
        if i >= 100 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!("{}", percentiles(lat));
    Ok(())
}

fn connlat(to: SocketAddr, count: u32) -> Result<()> {
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count + 20 {
        let t = Instant::now();
        one_byte(to)?;
        if i >= 20 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!("{}", percentiles(lat));
    Ok(())
}

fn stream(to: SocketAddr, bytes: u64) -> Result<()> {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut c = polled::Conn::new(c)?;
    let buf = vec![1u8; 256 * 1024];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        c.write_all(&buf[..n])?;
        left -= n as u64;
    }
    c.0.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    c.read_exact(&mut count)?;
    let secs = t.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(count);
    if got != bytes {
        bail!("sink counted {got} bytes, sent {bytes}");
    }
    println!(
        "{}",
        serde_json::json!({"bytes": bytes, "seconds": secs, "gbit_per_s": bytes as f64 * 8.0 / secs / 1e9})
    );
    Ok(())
}
