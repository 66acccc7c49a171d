//! Running a closure inside a lab network namespace, on a thread of its own.
use std::{fs::File, path::Path};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

pub fn within<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let file = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// A tiny HTTP/1.0 GET against an address inside a namespace (the agents' admin).
pub fn http_get(netns: &Path, addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_owned();
    within(netns, move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(c, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        let status = s
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("bad HTTP status line")?;
        let body = s
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })
}
