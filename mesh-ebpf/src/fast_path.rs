//! The loopback fast path: sockops puts both ends of every application <-> agent
//! loopback connection of a pod that has it (`ENROLLED_FAST`) into `FAST_SOCKS`:
//! the app's socket to the agent's 15001 listener and the agent's end of it, the
//! agent's delivery socket from 127.0.0.6 and the app's end of it. sk_msg then
//! moves each message straight into the peer socket's receive queue, skipping the
//! loopback TCP/IP stack. The agent still reads, authorizes, counts and writes
//! every byte: only the hops between it and the applications are shortened.
//!
//! Ordering: a socket's first send decides for its whole life whether its messages
//! are redirected (the peer is in the map) or take the normal path, so no message
//! can overtake an earlier one sent the other way.
use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{sk_action, BPF_F_INGRESS, BPF_NOEXIST, BPF_SOCK_OPS_STATE_CB_FLAG},
    helpers::bpf_get_netns_cookie,
    macros::{map, sk_msg},
    maps::{Array, LruHashMap, PerCpuArray, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};
use mesh_common::{
    fast, ports, remote_port_host, FastKey, IpWords, AF_INET, ENROLLED_FAST,
    INBOUND_DELIVERY_SRC_V4,
};

use crate::maps::ENROLLED_NETNS;

/// Both ends of application <-> agent loopback connections.
#[map]
pub static FAST_SOCKS: SockHash<FastKey> = SockHash::with_max_entries(65536, 0);

/// Socket -> `fast::REDIRECT` or `fast::PASS`, decided at its first send.
#[map]
pub static FAST_DECIDED: LruHashMap<FastKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// [0] = 1 while the agent wants the fast path (`--fast-path on` and sk_msg attached).
#[map]
pub static FAST_ON: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static FAST_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(fast::COUNT, 0);

#[inline(always)]
fn add(index: u32, n: u64) {
    if let Some(c) = FAST_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += n };
    }
}

const DELIVERY_SRC: IpWords = IpWords::from_v4_octets(INBOUND_DELIVERY_SRC_V4);

/// A key from the fields sock_ops and sk_msg contexts both have (addresses in
/// network order, the local port in host order, the remote one as the context
/// holds it).
#[inline(always)]
fn key(
    netns_cookie: u64,
    family: u32,
    (l4, l6): (u32, [u32; 4]),
    (r4, r6): (u32, [u32; 4]),
    (local_port, remote_port): (u32, u32),
) -> FastKey {
    let v4 = family == u32::from(AF_INET);
    FastKey {
        netns_cookie,
        local: if v4 {
            IpWords::from_v4_raw(l4)
        } else {
            IpWords(l6)
        },
        remote: if v4 {
            IpWords::from_v4_raw(r4)
        } else {
            IpWords(r6)
        },
        local_port,
        remote_port: remote_port_host(remote_port),
    }
}

/// The socket's own key, from a sock_ops context.
#[inline(always)]
pub fn sockops_key(ctx: &SockOpsContext) -> FastKey {
    let o = ctx.ops;
    // SAFETY: fields of the sock_ops context, readable for this program type; read
    // unconditionally (see orig_dst::client_key).
    let (family, l4, r4, l6, r6, lport, rport) = unsafe {
        (
            read_volatile(&(*o).family),
            read_volatile(&(*o).local_ip4),
            read_volatile(&(*o).remote_ip4),
            [
                read_volatile(&(*o).local_ip6[0]),
                read_volatile(&(*o).local_ip6[1]),
                read_volatile(&(*o).local_ip6[2]),
                read_volatile(&(*o).local_ip6[3]),
            ],
            [
                read_volatile(&(*o).remote_ip6[0]),
                read_volatile(&(*o).remote_ip6[1]),
                read_volatile(&(*o).remote_ip6[2]),
                read_volatile(&(*o).remote_ip6[3]),
            ],
            read_volatile(&(*o).local_port),
            read_volatile(&(*o).remote_port),
        )
    };
    // SAFETY: sock_ops contexts are accepted by bpf_get_netns_cookie.
    let cookie = unsafe { bpf_get_netns_cookie(o as *mut c_void) };
    key(cookie, family, (l4, l6), (r4, r6), (lport, rport))
}

/// sockops, on an established connection: is it one the fast path shortens?
#[inline(always)]
pub fn on_established(ctx: &SockOpsContext, passive: bool) {
    if FAST_ON.get(0).copied() != Some(1) {
        return;
    }
    let mut key = sockops_key(ctx);
    // SAFETY: plain read of a map value.
    let Some(pod) = (unsafe { ENROLLED_NETNS.get(key.netns_cookie) }) else {
        return;
    };
    if pod.flags & ENROLLED_FAST == 0 {
        return;
    }
    let agent_hop = if passive {
        key.local_port == u32::from(ports::OUTBOUND) || key.remote == DELIVERY_SRC
    } else {
        key.remote_port == u32::from(ports::OUTBOUND) || key.local == DELIVERY_SRC
    };
    if !agent_hop {
        return;
    }
    // SAFETY: the context's socket pointer, as bpf_sock_hash_update expects.
    let ops = unsafe { &mut *ctx.ops };
    match FAST_SOCKS.update(&mut key, ops, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            add(fast::SOCKETS_ADDED, 1);
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        Err(_) => add(fast::INSERT_FAILED, 1),
    }
}

/// sockops, on close: forget the socket's decision (the sockhash drops it itself).
#[inline(always)]
pub fn on_close(ctx: &SockOpsContext) {
    let _ = FAST_DECIDED.remove(sockops_key(ctx));
}

/// The sending socket's own key, from an sk_msg context.
#[inline(always)]
fn msg_key(ctx: &SkMsgContext) -> FastKey {
    let m = ctx.msg;
    // SAFETY: fields of the sk_msg context, readable for this program type.
    let (family, l4, r4, l6, r6, lport, rport) = unsafe {
        (
            read_volatile(&(*m).family),
            read_volatile(&(*m).local_ip4),
            read_volatile(&(*m).remote_ip4),
            [
                read_volatile(&(*m).local_ip6[0]),
                read_volatile(&(*m).local_ip6[1]),
                read_volatile(&(*m).local_ip6[2]),
                read_volatile(&(*m).local_ip6[3]),
            ],
            [
                read_volatile(&(*m).remote_ip6[0]),
                read_volatile(&(*m).remote_ip6[1]),
                read_volatile(&(*m).remote_ip6[2]),
                read_volatile(&(*m).remote_ip6[3]),
            ],
            read_volatile(&(*m).local_port),
            read_volatile(&(*m).remote_port),
        )
    };
    // SAFETY: sk_msg contexts are accepted by bpf_get_netns_cookie.
    let cookie = unsafe { bpf_get_netns_cookie(m as *mut c_void) };
    key(cookie, family, (l4, l6), (r4, r6), (lport, rport))
}

/// Runs for every send on a socket in `FAST_SOCKS`.
#[sk_msg]
pub fn mesh_fast_msg(ctx: SkMsgContext) -> u32 {
    let own = msg_key(&ctx);
    let mut peer = own.peer();
    let size = u64::from(ctx.size());
    // SAFETY: plain read of a map value.
    match unsafe { FAST_DECIDED.get(own) }.copied() {
        Some(fast::PASS) => sk_action::SK_PASS,
        Some(_) => {
            // Redirecting: the peer must still be there, or the bytes go nowhere.
            if FAST_SOCKS.redirect_msg(&ctx, &mut peer, u64::from(BPF_F_INGRESS))
                == i64::from(sk_action::SK_PASS)
            {
                add(fast::MSGS_REDIRECTED, 1);
                add(fast::BYTES_REDIRECTED, size);
                sk_action::SK_PASS
            } else {
                add(fast::MSGS_DROPPED, 1);
                sk_action::SK_DROP
            }
        }
        None => {
            let redirected = FAST_SOCKS.redirect_msg(&ctx, &mut peer, u64::from(BPF_F_INGRESS))
                == i64::from(sk_action::SK_PASS);
            if redirected {
                let _ = FAST_DECIDED.insert(own, fast::REDIRECT, 0);
                add(fast::SOCKETS_REDIRECTING, 1);
                add(fast::MSGS_REDIRECTED, 1);
                add(fast::BYTES_REDIRECTED, size);
            } else {
                let _ = FAST_DECIDED.insert(own, fast::PASS, 0);
                add(fast::SOCKETS_PASSING, 1);
            }
            sk_action::SK_PASS
        }
    }
}
