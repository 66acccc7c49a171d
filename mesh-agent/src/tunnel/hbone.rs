//! HBONE: TCP carried as HTTP/2 CONNECT streams over mutual TLS 1.3 to port 15008,
//! in Istio's wire format (`:authority` = `ip:port`, `Forwarded: for="ip:port"`), so
//! a ztunnel peer can interoperate.
pub mod io;
pub mod keepalive;
pub mod pool;
pub mod server;

/// HTTP/2 windows sized for throughput on one stream without a window stall.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
pub const MAX_FRAME: u32 = 256 << 10;
/// Streams one pooled connection carries at most (as ztunnel's and Envoy's
/// defaults); fewer when the peer's SETTINGS_MAX_CONCURRENT_STREAMS says so.
pub const MAX_STREAMS_PER_CONNECTION: usize = 100;
/// TCP connect, TLS and HTTP/2 handshakes of a new pooled connection, and the
/// wait for a CONNECT's answer: a silent peer costs at most this.
pub const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Header carrying the reason of a refusal, for the peer's logs.
pub const REASON_HEADER: &str = "x-ferrymesh-reason";
