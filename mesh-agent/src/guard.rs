//! Limits that hold off hostile peers, and the one counter of what they refused
//! (`ferrymesh_hostile_refused_total{reason}`). Every refusal here is logged once
//! by its caller with the peer and the reason, and counted under a typed reason.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mesh_infra::caps::{Caps, Full, Place};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a hostile or over-limit input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A connection or CONNECT aimed at one of the agent's own ports in a pod.
    AgentPort,
    /// The agent's cap on concurrent inbound connections.
    ConnectionLimit,
    /// The per-peer-address cap on concurrent inbound connections.
    PeerConnectionLimit,
    /// TLS or HTTP/2 handshake not finished in time.
    HandshakeTimeout,
    /// An HTTP/2 peer that stopped answering keepalive PINGs.
    KeepaliveTimeout,
    /// A client that sent no complete request head in time.
    HeaderTimeout,
    /// The admin/metrics server's cap on open connections.
    AdminConnectionLimit,
    /// An HTTP upgrade other than WebSocket (h2c smuggling), dropped.
    UpgradeNotAllowed,
    /// A mirrored request not sent: too many in flight.
    MirrorLimit,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::AgentPort,
        Reason::ConnectionLimit,
        Reason::PeerConnectionLimit,
        Reason::HandshakeTimeout,
        Reason::KeepaliveTimeout,
        Reason::HeaderTimeout,
        Reason::AdminConnectionLimit,
        Reason::UpgradeNotAllowed,
        Reason::MirrorLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AgentPort => "agent_port",
            Reason::ConnectionLimit => "connection_limit",
            Reason::PeerConnectionLimit => "peer_connection_limit",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::KeepaliveTimeout => "keepalive_timeout",
            Reason::HeaderTimeout => "header_timeout",
            Reason::AdminConnectionLimit => "admin_connection_limit",
            Reason::UpgradeNotAllowed => "upgrade_not_allowed",
            Reason::MirrorLimit => "mirror_limit",
        }
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: Reason,
}

/// The limits, with defaults in line with Envoy's and ztunnel's hardening.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CONNECT streams one HBONE connection carries (server and client side).
    pub hbone_streams: u32,
    /// Largest HTTP/2 header list accepted.
    pub header_list_bytes: u32,
    /// TLS plus HTTP/2 handshake.
    pub handshake_timeout: Duration,
    /// An HBONE connection is PINGed after this long without a frame...
    pub keepalive_interval: Duration,
    /// ...and closed when the PONG does not come within this.
    pub keepalive_timeout: Duration,
    /// Concurrent inbound connections the agent accepts (all pods, all listeners).
    pub connections: usize,
    /// Of which from one peer address.
    pub connections_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hbone_streams: 100,
            header_list_bytes: 64 << 10,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(10),
            connections: 8192,
            connections_per_peer: 2048,
        }
    }
}

impl Limits {
    /// The defaults, with connection caps fitted to this process's open-file limit.
    pub fn for_this_process() -> Limits {
        use nix::sys::resource::{getrlimit, Resource};
        let nofile = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        Limits::for_open_files(nofile)
    }

    /// Connection caps that leave room in the process's open-file limit: every
    /// accepted connection holds about two descriptors.
    pub fn for_open_files(nofile: u64) -> Limits {
        let d = Limits::default();
        // The cap protects the descriptors, so it follows them; no fixed ceiling
        // (a busy node may carry far more than a default would guess).
        let connections = usize::try_from(nofile / 3).unwrap_or(usize::MAX);
        let connections = connections.clamp(64, 1 << 20);
        Limits {
            connections,
            connections_per_peer: (connections / 4).max(16),
            ..d
        }
    }
}

/// Refusal counter plus the inbound connection caps.
#[derive(Clone)]
pub struct Guard {
    pub limits: Limits,
    refused: Family<ReasonLabel, Counter>,
    caps: Caps,
    /// Per reason: the second (since `epoch`, plus one) of its last log line.
    logged: Arc<[AtomicU64; Reason::ALL.len()]>,
    epoch: Instant,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(Limits::default())
    }
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        let refused = Family::<ReasonLabel, Counter>::default();
        for reason in Reason::ALL {
            let _ = refused.get_or_create(&ReasonLabel { reason });
        }
        Guard {
            limits: limits.clone(),
            caps: Caps::new(limits.connections, limits.connections_per_peer),
            refused,
            logged: Arc::default(),
            epoch: Instant::now(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "hostile_refused",
            "Inputs refused by a hardening limit, by reason",
            self.refused.clone(),
        );
    }

    /// Counts one refusal and runs `log` unless this reason was logged in the last
    /// second (a flood of refusals must not become a flood of log lines).
    pub fn refuse(&self, reason: Reason, log: impl FnOnce()) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
        let now = self.epoch.elapsed().as_secs() + 1;
        let slot = &self.logged[reason as usize];
        if slot.swap(now, Ordering::Relaxed) != now {
            log();
        }
    }

    pub fn refused(&self, reason: Reason) -> u64 {
        self.refused.get_or_create(&ReasonLabel { reason }).get()
    }

    /// A place for one more inbound connection from `peer`, held until it drops;
    /// the reason (counted, logged) when a cap is reached.
    pub fn admit(&self, peer: IpAddr) -> Result<Place, Reason> {
        self.caps.admit(peer).map_err(|full| {
            let r = match full {
                Full::Total => Reason::ConnectionLimit,
                Full::Peer => Reason::PeerConnectionLimit,
            };
            self.refuse(r, || {
                tracing::warn!(%peer, limit = self.caps.total, per_peer = self.caps.per_peer, "inbound connection refused: {}", r.as_str());
            });
            r
        })
    }

    /// Inbound connections open now.
    pub fn open_connections(&self) -> usize {
        self.caps.open()
    }
}

/// An admin server's handler whose refused connections are counted here.
pub struct Counted<H> {
    pub handler: H,
    pub guard: Guard,
}

impl<H: mesh_infra::admin::Handler> mesh_infra::admin::Handler for Counted<H> {
    fn handle(&self, path: &str) -> mesh_infra::admin::Reply {
        self.handler.handle(path)
    }

    fn refused(&self, peer: std::net::SocketAddr) {
        self.guard.refuse(Reason::AdminConnectionLimit, || {
            tracing::warn!(%peer, limit = mesh_infra::admin::MAX_CONNECTIONS, "admin connection refused: too many open");
        });
    }
}

/// The agent's own ports inside a pod: never a destination of a captured or
/// tunnelled connection (it would come back to the agent: a loop).
pub fn is_agent_port(port: u16) -> bool {
    mesh_common::ports::AGENT_PORTS.contains(&port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_what_they_refuse_and_free_on_drop() {
        let g = Guard::new(Limits {
            connections: 3,
            connections_per_peer: 2,
            ..Limits::default()
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = g.admit(a).expect("first");
        let _a2 = g.admit(a).expect("second");
        assert_eq!(g.admit(a).err(), Some(Reason::PeerConnectionLimit));
        let _b1 = g.admit(b).expect("other peer");
        assert_eq!(g.admit(b).err(), Some(Reason::ConnectionLimit));
        assert_eq!(g.refused(Reason::PeerConnectionLimit), 1);
        assert_eq!(g.refused(Reason::ConnectionLimit), 1);
        drop(a1);
        assert_eq!(g.open_connections(), 2);
        let _a3 = g.admit(a).expect("freed by drop");
    }

    #[test]
    fn limits_follow_the_open_file_limit() {
        assert_eq!(Limits::for_open_files(20_000).connections, 6666);
        assert_eq!(Limits::for_open_files(1_000_000).connections, 333_333);
        assert_eq!(Limits::for_open_files(10).connections, 64);
    }

    #[test]
    fn agent_ports_are_the_agents() {
        for p in [15001, 15006, 15008, 15000, 15020, 15021] {
            assert!(is_agent_port(p), "{p}");
        }
        assert!(!is_agent_port(8080));
    }
}
