//! cgroup/connect4 and cgroup/connect6: outbound capture.
//!
//! For a TCP connect() in an enrolled netns that is not the agent's own (marked) and
//! not to an excluded destination, remember the original destination under the
//! socket cookie and rewrite the destination to the agent's 15001 listener on the
//! loopback of the same namespace. A pod whose enrolment failed (`ENROLLED_BLOCKED`)
//! is refused every connect() beyond its loopback.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::warn;
use mesh_common::{counters, ports, IpWords, SockAddr, AF_INET, AF_INET6};

use crate::{
    decide::{self, Outbound},
    maps::{count, ENROLLED_NETNS, EXCLUDED_PORTS, PENDING_CONNECT},
};

const ALLOW: i32 = 1;
/// connect() fails with EPERM.
const REJECT: i32 = 0;
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    try_connect(&ctx, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    try_connect(&ctx, AF_INET6)
}

#[inline(always)]
fn try_connect(ctx: &SockAddrContext, family: u16) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the verifier guarantees ctx fields are readable for this program type.
    unsafe {
        if (*sa).type_ != SOCK_STREAM {
            return ALLOW;
        }
        let netns = bpf_get_netns_cookie(sa as *mut c_void);
        let Some(pod) = ENROLLED_NETNS.get(netns) else {
            return ALLOW;
        };
        let sk = (*sa).__bindgen_anon_1.sk;
        if sk.is_null() {
            return ALLOW;
        }
        let mark = (*sk).mark;
        let ip = if family == AF_INET {
            IpWords::from_v4_raw((*sa).user_ip4)
        } else {
            IpWords((*sa).user_ip6)
        };
        let port = u16::from_be((*sa).user_port as u16);
        let excluded = EXCLUDED_PORTS.get(port as u32).is_some();
        match decide::outbound(mark, &ip, excluded, pod) {
            Outbound::SkipMarked => {
                count(counters::CONNECT_SKIPPED_MARK);
                return ALLOW;
            }
            Outbound::SkipExcluded => {
                count(counters::CONNECT_SKIPPED_EXCLUDED);
                return ALLOW;
            }
            Outbound::Blocked => {
                count(counters::CONNECT_BLOCKED);
                return REJECT;
            }
            Outbound::Capture => {}
        }
        let cookie = bpf_get_socket_cookie(sa as *mut c_void);
        let orig = SockAddr { ip, port, family };
        if let Err(e) = PENDING_CONNECT.insert(cookie, orig, 0) {
            // Fail closed: still steer to the agent, which refuses what it cannot route.
            count(counters::MAP_FULL);
            warn!(
                ctx,
                "PENDING_CONNECT insert failed ({}); connection will be refused", e
            );
        }
        if family == AF_INET {
            (*sa).user_ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
        } else {
            (*sa).user_ip6 = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
        }
        (*sa).user_port = u32::from(ports::OUTBOUND.to_be());
        count(counters::CONNECT_CAPTURED);
    }
    ALLOW
}
