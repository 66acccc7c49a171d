//! `steady`: the lifecycle tests' load (new connections at a fixed pace beside
//! long-lived ones), reporting when each failure began and ended so that a test
//! can tell failures while no agent ran from failures while one did.
use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Result};

use std::io::{Read, Write};

/// The held connections' side of `steady`: (echoes, when each failing echo began
/// and ended, first error).
fn held_loop(
    conns: Vec<TcpStream>,
    every: Duration,
    text: &[u8],
    done: &std::sync::atomic::AtomicBool,
) -> (u64, Vec<[u64; 2]>, Option<String>) {
    let mut conns: Vec<Option<TcpStream>> = conns.into_iter().map(Some).collect();
    let (mut ok, mut first) = (0u64, None);
    let mut failed_at = Vec::new();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        for slot in conns.iter_mut() {
            if let Some(c) = slot {
                let began = now_ms();
                match echo_once(c, text) {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed_at.push([began, now_ms()]);
                        first.get_or_insert(format!("{e:#} (after {ok} echoes)"));
                        *slot = None;
                    }
                }
            }
        }
        std::thread::sleep(every);
    }
    (ok, failed_at, first)
}

/// Wall-clock milliseconds since the epoch (comparable across the lab's processes).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// New connections of `steady`: when each failed one began and ended, and the
/// outages (first failure to the end of the next success).
#[derive(Default)]
struct Outcomes {
    ok: u32,
    failed_at: Vec<[u64; 2]>,
    first_error: Option<String>,
    outage_from: Option<u64>,
    longest_outage_ms: u64,
    recovered_at: Option<u64>,
    last_ok: Option<u64>,
}

impl Outcomes {
    fn record(&mut self, began: u64, r: Result<()>) {
        match r {
            Ok(()) => {
                self.ok += 1;
                let now = now_ms();
                self.last_ok = Some(now);
                if let Some(from) = self.outage_from.take() {
                    self.longest_outage_ms = self.longest_outage_ms.max(now - from);
                    self.recovered_at = Some(now);
                }
            }
            Err(e) => {
                self.failed_at.push([began, now_ms()]);
                self.outage_from.get_or_insert(began);
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

pub fn steady(
    to: SocketAddr,
    (count, every_ms): (u32, u64),
    (held, held_every_ms): (u32, u64),
    text: &str,
) -> Result<()> {
    let text = format!("{text}\n").into_bytes();
    let mut conns = Vec::new();
    for _ in 0..held {
        let c = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        conns.push(c);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut new = Outcomes::default();
    let (held_ok, held_failed_at, held_error) = std::thread::scope(|s| {
        let h = s.spawn(|| held_loop(conns, Duration::from_millis(held_every_ms), &text, &done));
        for _ in 0..count {
            let began = now_ms();
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .map_err(anyhow::Error::from)
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    echo_once(&mut c, &text)
                });
            new.record(began, r);
            std::thread::sleep(Duration::from_millis(every_ms));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap_or((0, Vec::new(), None))
    });
    println!(
        "{}",
        serde_json::json!({
            "new_ok": new.ok, "new_failed": new.failed_at.len(), "new_failures_ms": new.failed_at,
            "first_error": new.first_error, "longest_outage_ms": new.longest_outage_ms,
            "recovered_at_ms": new.recovered_at, "last_ok_ms": new.last_ok,
            "held_echoes": held_ok, "held_failed": held_failed_at.len(),
            "held_failures_ms": held_failed_at, "first_held_error": held_error,
        })
    );
    Ok(())
}

/// Writes `text` and reads the same bytes back.
fn echo_once(c: &mut TcpStream, text: &[u8]) -> Result<()> {
    c.write_all(text)?;
    let mut back = vec![0u8; text.len()];
    c.read_exact(&mut back)?;
    if back != text {
        bail!("wrong echo");
    }
    Ok(())
}
