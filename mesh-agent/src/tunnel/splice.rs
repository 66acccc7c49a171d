//! Moving bytes both ways between two TCP streams, counting them.
use tokio::net::TcpStream;

use crate::metrics::WorkloadCounters;

/// Large enough for line-rate copies on loopback and veth; allocated per connection
/// only while bytes flow (tokio's copy buffers live in the future).
const BUF: usize = 64 * 1024;

pub async fn proxy(
    mut downstream: TcpStream,
    mut upstream: TcpStream,
    counters: &WorkloadCounters,
) {
    match tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, BUF, BUF).await {
        Ok((sent, received)) => {
            counters.bytes_sent.add(sent);
            counters.bytes_received.add(received);
        }
        Err(e) => tracing::debug!("connection ended with an error: {e}"),
    }
}
