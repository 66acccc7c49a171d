//! Moving bytes both ways between two streams, counting them.
//!
//! Unlike `tokio::io::copy_bidirectional`, a direction allocates its buffer only
//! when its first bytes arrive: an idle connection costs no copy buffers, which is
//! what keeps the agent's memory per open connection small.
use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::{metrics::WorkloadCounters, tunnel::hbone::io::H2Io};

/// Large enough for line-rate copies on loopback and veth.
const BUF: usize = 64 * 1024;

/// A stream that can say "bytes (or EOF) are waiting" without being handed a buffer.
pub trait WaitReadable {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WaitReadable for TcpStream {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// One direction: read from `r` until EOF, write everything to `w`, then shut `w`
/// down (a TCP FIN / an HTTP/2 END_STREAM).
async fn one_way<R, W>(mut r: R, mut w: W) -> io::Result<u64>
where
    R: AsyncRead + WaitReadable + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        if buf.is_empty() {
            poll_fn(|cx| r.poll_wait_readable(cx)).await?;
            buf = vec![0; BUF];
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Read half of a TcpStream that still knows its readiness.
pub struct TcpRead(tokio::net::tcp::OwnedReadHalf);

impl AsyncRead for TcpRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl WaitReadable for TcpRead {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_ref().poll_read_ready(cx)
    }
}

fn account(r: io::Result<(u64, u64)>, counters: &WorkloadCounters) -> Option<(u64, u64)> {
    match r {
        Ok((sent, received)) => {
            counters.bytes_sent.add(sent);
            counters.bytes_received.add(received);
            Some((sent, received))
        }
        Err(e) => {
            tracing::debug!("connection ended with an error: {e}");
            None
        }
    }
}

/// TCP to TCP. Returns (downstream to upstream, back), None if it ended in error.
pub async fn proxy(
    downstream: TcpStream,
    upstream: TcpStream,
    counters: &WorkloadCounters,
) -> Option<(u64, u64)> {
    let (dr, dw) = downstream.into_split();
    let (ur, uw) = upstream.into_split();
    let r = tokio::try_join!(one_way(TcpRead(dr), uw), one_way(TcpRead(ur), dw));
    account(r, counters)
}

/// TCP to an HBONE stream. Returns (TCP to tunnel, back).
pub async fn proxy_tunnel(
    tcp: TcpStream,
    tunnel: H2Io,
    counters: &WorkloadCounters,
) -> Option<(u64, u64)> {
    let (tr, tw) = tcp.into_split();
    let (nr, nw) = tunnel.into_split();
    let r = tokio::try_join!(one_way(TcpRead(tr), nw), one_way(nr, tw));
    account(r, counters)
}
