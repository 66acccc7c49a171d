//! Protocol detection with a deadline. hyper-util's auto builder reads the first
//! bytes to tell HTTP/2's preface from HTTP/1.1 with no timer of its own, so a
//! client that sends nothing, or half a preface, would hold its connection for
//! ever. Here those bytes are read first, within the header timeout, and replayed
//! to hyper.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes cannot be HTTP/2's preface any more, or are all of it.
/// Err(TimedOut) if that takes longer than `limit`; Ok with nothing read at EOF.
pub async fn first_bytes<I: AsyncRead + Unpin>(
    mut io: I,
    limit: Duration,
) -> io::Result<Prefixed<I>> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            let k = io.read(&mut buf[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
            if buf[..n] != H2_PREFACE[..n] {
                break;
            }
        }
        io::Result::Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r?,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    }
    Ok(Prefixed {
        prefix: buf,
        at: 0,
        len: n,
        inner: io,
    })
}

/// A stream whose first bytes were read already: they come out first.
pub struct Prefixed<I> {
    prefix: [u8; 24],
    at: usize,
    len: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.len {
            let n = (self.len - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn half_a_preface_times_out_whole_heads_are_replayed() {
        // Half of HTTP/2's preface, then nothing: the deadline ends it.
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&H2_PREFACE[..10]).await.expect("write");
        let r = first_bytes(server, Duration::from_secs(10)).await;
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));

        // Nothing at all: the same.
        let (_client, server) = tokio::io::duplex(1024);
        let r = first_bytes(server, Duration::from_secs(10)).await;
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));

        // HTTP/1.1 diverges at once; every byte comes out again, in order.
        for head in [&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..], &H2_PREFACE[..]] {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(head).await.expect("write");
            drop(client);
            let mut p = first_bytes(server, Duration::from_secs(10))
                .await
                .expect("read");
            let mut all = Vec::new();
            p.read_to_end(&mut all).await.expect("replay");
            assert_eq!(all, head);
        }
    }
}
