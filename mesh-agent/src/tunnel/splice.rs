//! Moving bytes both ways between two TCP streams, counting them.
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::metrics::WorkloadCounters;

/// Large enough for line-rate copies on loopback and veth; allocated per connection
/// only while bytes flow (tokio's copy buffers live in the future).
const BUF: usize = 64 * 1024;

pub async fn proxy(
    downstream: TcpStream,
    upstream: TcpStream,
    counters: &WorkloadCounters,
) -> Option<(u64, u64)> {
    proxy_io(downstream, upstream, counters).await
}

/// Same, for any pair of streams (e.g. an HBONE tunnel and a TCP socket).
/// Returns the bytes moved (downstream to upstream, back), None if it ended in error.
pub async fn proxy_io<A, B>(
    mut downstream: A,
    mut upstream: B,
    counters: &WorkloadCounters,
) -> Option<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, BUF, BUF).await {
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
