//! HTTP/2 keepalive for both ends of HBONE: a PING after every interval; a peer
//! that does not answer within the timeout is gone (a node that died without a
//! reset, a frozen process), and its connection is dropped with its streams.
use std::time::Duration;

pub struct Keepalive {
    ping: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
}

impl Keepalive {
    /// `ping` is the connection's PingPong (None when it was taken: never lost).
    pub fn new(ping: Option<h2::PingPong>, interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            ping,
            interval,
            timeout,
        }
    }

    /// PINGs after every interval; resolves when a PONG did not come back in time.
    /// Never cancelled mid-PING (h2 allows one outstanding user PING). The
    /// connection must be polled meanwhile (it carries the PING).
    pub async fn until_lost(mut self) {
        let Some(ping) = self.ping.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(self.interval).await;
            let pong = tokio::time::timeout(self.timeout, ping.ping(h2::Ping::opaque())).await;
            if !matches!(pong, Ok(Ok(_))) {
                return;
            }
        }
    }
}
