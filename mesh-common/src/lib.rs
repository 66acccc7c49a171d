//! Types shared by the eBPF programs (kernel) and the agent (user space).
//!
//! Every map key and value is `#[repr(C)]` and padding-free, so the kernel and user
//! space agree on the bytes without relying on compiler layout choices. Addresses are
//! stored as four big-endian 32-bit words (IPv4 as an IPv4-mapped IPv6 address), the
//! way the kernel hands them to sock_addr, sock_ops and sk_lookup programs.
#![cfg_attr(not(test), no_std)]

/// Ports the agent binds inside every enrolled pod network namespace.
pub mod ports {
    /// Outbound capture listener (127.0.0.1 / ::1).
    pub const OUTBOUND: u16 = 15001;
    /// Inbound plaintext capture listener (sk_lookup target).
    pub const INBOUND: u16 = 15006;
    /// HBONE (mTLS) inbound listener.
    pub const HBONE: u16 = 15008;
    /// Node admin (localhost only).
    pub const ADMIN: u16 = 15000;
    /// Node metrics.
    pub const METRICS: u16 = 15020;
    /// Node readiness.
    pub const READINESS: u16 = 15021;

    /// The agent's ports: never a destination the agent delivers to.
    pub const AGENT_PORTS: [u16; 6] = [OUTBOUND, INBOUND, HBONE, ADMIN, METRICS, READINESS];
}

/// SO_MARK bits carried by every socket the agent creates.
///
/// 0x539 in the upper half of the mark avoids kube-proxy (0x4000, 0x8000) and Cilium
/// (0x0200..0x0f00 and 0xfff0_0000 is left alone too: we use 0x0539_0000 only).
pub const AGENT_MARK: u32 = 0x0539_0000;
pub const AGENT_MARK_MASK: u32 = 0x0fff_0000;

/// Source address of the agent's inbound delivery connections to an application
/// (IPv4). sk_lookup never steers connections from it.
pub const INBOUND_DELIVERY_SRC_V4: [u8; 4] = [127, 0, 0, 6];

/// Names of the maps, shared so user space looks them up by the same string.
pub mod maps {
    pub const ENROLLED_NETNS: &str = "ENROLLED_NETNS";
    pub const PENDING_CONNECT: &str = "PENDING_CONNECT";
    pub const ORIG_DST: &str = "ORIG_DST";
    pub const EXCLUDED_PORTS: &str = "EXCLUDED_PORTS";
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    pub const ENROLLED_ADDRS: &str = "ENROLLED_ADDRS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FAST_SOCKS: &str = "FAST_SOCKS";
    pub const FAST_DECIDED: &str = "FAST_DECIDED";
    pub const FAST_ON: &str = "FAST_ON";
    pub const FAST_COUNTERS: &str = "FAST_COUNTERS";
}

/// Names of the programs.
pub mod programs {
    pub const CONNECT4: &str = "mesh_connect4";
    pub const CONNECT6: &str = "mesh_connect6";
    pub const SOCKOPS: &str = "mesh_sockops";
    pub const SK_LOOKUP: &str = "mesh_sk_lookup";
    pub const FAST_MSG: &str = "mesh_fast_msg";
}

/// Address family values as the kernel uses them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// An IP address as four network-order words; IPv4 is mapped (::ffff:a.b.c.d).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IpWords(pub [u32; 4]);

impl IpWords {
    /// The mapped form of an IPv4 address given as the kernel's network-order u32.
    pub const fn from_v4_raw(ip4: u32) -> Self {
        IpWords([0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), ip4])
    }

    pub const fn from_v4_octets(o: [u8; 4]) -> Self {
        Self::from_v4_raw(u32::from_ne_bytes(o))
    }

    pub const fn from_v6_octets(o: [u8; 16]) -> Self {
        IpWords([
            u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
            u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
            u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
            u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
        ])
    }

    pub const fn octets(&self) -> [u8; 16] {
        let a = self.0[0].to_ne_bytes();
        let b = self.0[1].to_ne_bytes();
        let c = self.0[2].to_ne_bytes();
        let d = self.0[3].to_ne_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    pub const fn is_v4_mapped(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
    }
}

/// Value of `ENROLLED_NETNS` (key: the netns cookie, u64).
///
/// The pod's own addresses are kept so that a pod talking to itself is not captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EnrolledNetns {
    pub pod_ip4: IpWords,
    pub pod_ip6: IpWords,
    /// `ENROLLED_*` bits.
    pub flags: u32,
}

/// `EnrolledNetns::flags`: the pod could not be enrolled; every connect() it makes
/// beyond its loopback is refused (inbound finds no listener and is dropped), so it
/// sends and receives nothing around the mesh until the agent enrols it.
pub const ENROLLED_BLOCKED: u32 = 1;

/// `EnrolledNetns::flags`: the pod's loopback hops to the agent take the sockmap
/// fast path (set by the agent per its `--fast-path` and the pod's annotation).
pub const ENROLLED_FAST: u32 = 2;

/// An original destination as recorded by connect4/connect6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockAddr {
    pub ip: IpWords,
    /// Host byte order.
    pub port: u16,
    /// AF_INET or AF_INET6 as the application dialled it.
    pub family: u16,
}

/// Key of `ORIG_DST`: the client end of a captured connection as the agent sees it
/// after accept() (its peer address), scoped by the pod's netns because 127.0.0.1
/// tuples repeat across pods.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OrigDstKey {
    pub netns_cookie: u64,
    pub ip: IpWords,
    /// Host byte order.
    pub port: u32,
    pub _reserved: u32,
}

/// Key of `FAST_SOCKS` and `FAST_DECIDED`: one end of a loopback connection between
/// an application and the agent, as that end sees it (its peer's key is the same
/// with local and remote swapped). Ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FastKey {
    pub netns_cookie: u64,
    pub local: IpWords,
    pub remote: IpWords,
    pub local_port: u32,
    pub remote_port: u32,
}

impl FastKey {
    /// The other end of the same connection.
    pub const fn peer(&self) -> FastKey {
        FastKey {
            netns_cookie: self.netns_cookie,
            local: self.remote,
            remote: self.local,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// A remote port as sock_ops and sk_msg contexts hold it (network order, shifted
/// into the upper half on some kernels), in host order either way.
#[inline(always)]
pub const fn remote_port_host(raw: u32) -> u32 {
    let v = u32::from_be(raw);
    if v > 0xffff {
        v >> 16
    } else {
        v
    }
}

/// Values of `FAST_DECIDED`: what a socket's messages do, fixed at its first send so
/// that no byte overtakes an earlier one taking the other path.
pub mod fast {
    pub const REDIRECT: u32 = 1;
    pub const PASS: u32 = 2;

    /// Indexes into the per-CPU `FAST_COUNTERS` array.
    pub const SOCKETS_ADDED: u32 = 0;
    pub const INSERT_FAILED: u32 = 1;
    pub const SOCKETS_REDIRECTING: u32 = 2;
    pub const SOCKETS_PASSING: u32 = 3;
    pub const MSGS_REDIRECTED: u32 = 4;
    pub const BYTES_REDIRECTED: u32 = 5;
    pub const MSGS_DROPPED: u32 = 6;
    pub const COUNT: u32 = 7;

    pub const NAMES: [&str; COUNT as usize] = [
        "fast_sockets_added",
        "fast_insert_failed",
        "fast_sockets_redirecting",
        "fast_sockets_passing",
        "fast_msgs_redirected",
        "fast_bytes_redirected",
        "fast_msgs_dropped",
    ];
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counters {
    pub const CONNECT_CAPTURED: u32 = 0;
    pub const CONNECT_SKIPPED_MARK: u32 = 1;
    pub const CONNECT_SKIPPED_EXCLUDED: u32 = 2;
    pub const ORIG_DST_RECORDED: u32 = 3;
    pub const ORIG_DST_DELETED: u32 = 4;
    pub const ORIG_DST_MISSING: u32 = 5;
    pub const LOOKUP_STEERED: u32 = 6;
    pub const LOOKUP_SKIPPED_DELIVERY: u32 = 7;
    pub const MAP_FULL: u32 = 8;
    pub const LOOKUP_DROPPED_NO_AGENT: u32 = 9;
    pub const LOOKUP_DROPPED_UNATTRIBUTED: u32 = 10;
    pub const CONNECT_BLOCKED: u32 = 11;
    pub const COUNT: u32 = 12;

    pub const NAMES: [&str; COUNT as usize] = [
        "connect_captured",
        "connect_skipped_mark",
        "connect_skipped_excluded",
        "orig_dst_recorded",
        "orig_dst_deleted",
        "orig_dst_missing",
        "lookup_steered",
        "lookup_skipped_delivery",
        "map_full",
        "lookup_dropped_no_agent",
        "lookup_dropped_unattributed",
        "connect_blocked",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], padding-free, and valid for any bit pattern.
    unsafe impl aya::Pod for super::IpWords {}
    unsafe impl aya::Pod for super::EnrolledNetns {}
    unsafe impl aya::Pod for super::SockAddr {}
    unsafe impl aya::Pod for super::OrigDstKey {}
    unsafe impl aya::Pod for super::FastKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn map_types_are_padding_free() {
        assert_eq!(size_of::<IpWords>(), 16);
        assert_eq!(size_of::<EnrolledNetns>(), 16 + 16 + 4);
        assert_eq!(size_of::<SockAddr>(), 16 + 2 + 2);
        assert_eq!(size_of::<OrigDstKey>(), 8 + 16 + 4 + 4);
        assert_eq!(size_of::<FastKey>(), 8 + 16 + 16 + 4 + 4);
    }

    #[test]
    fn remote_ports_read_the_same_shifted_or_not() {
        let port: u16 = 15001;
        let plain = u32::from(u16::from_ne_bytes(port.to_be_bytes()));
        assert_eq!(remote_port_host(plain), 15001);
        assert_eq!(remote_port_host(plain << 16), 15001);
    }

    #[test]
    fn a_fast_keys_peer_is_the_other_end() {
        let k = FastKey {
            netns_cookie: 7,
            local: IpWords::from_v4_octets([127, 0, 0, 1]),
            remote: IpWords::from_v4_octets([127, 0, 0, 1]),
            local_port: 40000,
            remote_port: 15001,
        };
        assert_eq!(k.peer().local_port, 15001);
        assert_eq!(k.peer().peer(), k);
    }

    #[test]
    fn v4_mapping_round_trips() {
        let w = IpWords::from_v4_octets([198, 19, 1, 2]);
        assert!(w.is_v4_mapped());
        assert_eq!(&w.octets()[12..], &[198, 19, 1, 2]);
        assert_eq!(
            &w.octets()[..12],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
    }
}
