//! Moving bytes both ways between two streams, counting them.
//!
//! The copy is tokio's `copy_bidirectional`, but it starts only once either side
//! has bytes (or EOF) waiting: its two buffers are allocated then, so an idle
//! connection costs no copy buffers, which keeps the agent's memory per open
//! connection small.
use std::{
    future::poll_fn,
    io,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::metrics::WorkloadCounters;

/// Large enough for line-rate copies on loopback and veth.
const BUF: usize = 64 * 1024;

/// A stream that can say "bytes (or EOF) are waiting" without being handed a buffer.
pub trait WaitReadable {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WaitReadable for TcpStream {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Read readiness alone is optimistic for a fresh socket; peeking one byte
        // (into the stack) tells data or EOF from nothing, and waits otherwise.
        let mut one = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut one);
        self.poll_peek(cx, &mut buf).map_ok(|_| ())
    }
}

/// Resolves when either side has something to read.
async fn either_readable<A: WaitReadable, B: WaitReadable>(a: &mut A, b: &mut B) -> io::Result<()> {
    poll_fn(|cx| match a.poll_wait_readable(cx) {
        Poll::Ready(r) => Poll::Ready(r),
        Poll::Pending => b.poll_wait_readable(cx),
    })
    .await
}

fn account(r: io::Result<(u64, u64)>, counters: &WorkloadCounters) -> Option<(u64, u64)> {
    match r {
        Ok((sent, received)) => {
            counters.bytes_sent.inc_by(sent);
            counters.bytes_received.inc_by(received);
            Some((sent, received))
        }
        Err(e) => {
            tracing::debug!("connection ended with an error: {e}");
            None
        }
    }
}

/// Copies both ways between the application's socket and an upstream stream.
/// Returns (downstream to upstream, back), None if it ended in error.
pub async fn proxy<A, B>(
    mut downstream: A,
    mut upstream: B,
    counters: &WorkloadCounters,
) -> Option<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + WaitReadable + Unpin,
    B: AsyncRead + AsyncWrite + WaitReadable + Unpin,
{
    let r = match either_readable(&mut downstream, &mut upstream).await {
        Ok(()) => {
            tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, BUF, BUF).await
        }
        Err(e) => Err(e),
    };
    account(r, counters)
}
