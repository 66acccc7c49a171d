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

    /// Makes the coming close a reset (RST, RST_STREAM), for connections ended by
    /// the mesh rather than by either end.
    fn abort(&mut self) {}
}

impl WaitReadable for TcpStream {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Read readiness alone is optimistic for a fresh socket; peeking one byte
        // (into the stack) tells data or EOF from nothing, and waits otherwise.
        let mut one = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut one);
        self.poll_peek(cx, &mut buf).map_ok(|_| ())
    }

    fn abort(&mut self) {
        let _ = self.set_zero_linger();
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

/// What a splice moved, counted as the bytes were read (so a connection that ends
/// in an error still reports what it carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Bytes from the downstream side to the upstream side.
    pub sent: u64,
    /// Bytes back.
    pub received: u64,
    /// Ended cleanly (both sides closed), not with an I/O error.
    pub ok: bool,
}

impl Spliced {
    /// The same splice seen from the other end.
    pub fn reversed(self) -> Spliced {
        Spliced {
            sent: self.received,
            received: self.sent,
            ok: self.ok,
        }
    }
}

/// A stream that counts the bytes read from it.
struct Counting<S> {
    inner: S,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways between the application's socket and an upstream stream.
pub async fn proxy<A, B>(downstream: A, upstream: B, counters: &WorkloadCounters) -> Spliced
where
    A: AsyncRead + AsyncWrite + WaitReadable + Unpin,
    B: AsyncRead + AsyncWrite + WaitReadable + Unpin,
{
    proxy_until(downstream, upstream, counters, std::future::pending()).await
}

/// As `proxy`, until `stop` resolves: then both sides are reset.
pub async fn proxy_until<A, B>(
    downstream: A,
    upstream: B,
    counters: &WorkloadCounters,
    stop: impl std::future::Future<Output = ()>,
) -> Spliced
where
    A: AsyncRead + AsyncWrite + WaitReadable + Unpin,
    B: AsyncRead + AsyncWrite + WaitReadable + Unpin,
{
    let mut down = Counting {
        inner: downstream,
        read: 0,
    };
    let mut up = Counting {
        inner: upstream,
        read: 0,
    };
    let copy = async {
        either_readable(&mut down.inner, &mut up.inner).await?;
        tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, BUF, BUF)
            .await
            .map(|_| ())
    };
    let (r, stopped) = tokio::select! {
        r = copy => (r, false),
        () = stop => (Ok(()), true),
    };
    if stopped {
        down.inner.abort();
        up.inner.abort();
    }
    if let Err(e) = &r {
        tracing::debug!("connection ended with an error: {e}");
    }
    counters.bytes_sent.inc_by(down.read);
    counters.bytes_received.inc_by(up.read);
    Spliced {
        sent: down.read,
        received: up.read,
        ok: r.is_ok() && !stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_are_counted_even_when_the_splice_ends_in_an_error() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (down, _) = l.accept().await.expect("accept");
        let up_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let up_addr = up_l.local_addr().expect("addr");
        let up = TcpStream::connect(up_addr).await.expect("connect");
        let (mut app, _) = up_l.accept().await.expect("accept");
        let counters = WorkloadCounters::default();
        let splice = tokio::spawn(async move { proxy(down, up, &counters).await });
        client.write_all(&[7u8; 100_000]).await.expect("write");
        let mut got = vec![0u8; 100_000];
        app.read_exact(&mut got)
            .await
            .expect("read through the splice");
        // The far end resets: the copy fails, the bytes it moved still count.
        app.set_zero_linger().expect("linger");
        drop(app);
        let s = splice.await.expect("splice");
        assert_eq!((s.sent, s.ok), (100_000, false), "{s:?}");
    }
}
