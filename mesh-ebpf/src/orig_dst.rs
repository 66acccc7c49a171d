//! sockops: move the original destination from the socket cookie (known at connect())
//! to the client's (netns, address, port), which is what the agent sees after accept();
//! delete it when the client socket closes. Also the fast path's bookkeeping
//! (`fast_path`).
use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
};
use aya_log_ebpf::warn;
use mesh_common::{counters, IpWords, OrigDstKey, AF_INET};

use crate::{
    fast_path,
    maps::{count, ORIG_DST, PENDING_CONNECT},
};

#[sock_ops]
pub fn mesh_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            on_established(&ctx);
            fast_path::on_established(&ctx, false);
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => fast_path::on_established(&ctx, true),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            on_close(&ctx);
            fast_path::on_close(&ctx);
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn client_key(ctx: &SockOpsContext) -> OrigDstKey {
    let ops = ctx.ops;
    // Read every field unconditionally, then choose: a branch per family lets the
    // compiler fold the two loads into one through a variable offset, which the
    // verifier refuses for context pointers.
    // SAFETY: fields of the sock_ops context, readable for this program type.
    let (family, ip4, ip6) = unsafe {
        (
            read_volatile(&(*ops).family),
            read_volatile(&(*ops).local_ip4),
            [
                read_volatile(&(*ops).local_ip6[0]),
                read_volatile(&(*ops).local_ip6[1]),
                read_volatile(&(*ops).local_ip6[2]),
                read_volatile(&(*ops).local_ip6[3]),
            ],
        )
    };
    let ip = if family == u32::from(AF_INET) {
        IpWords::from_v4_raw(ip4)
    } else {
        IpWords(ip6)
    };
    OrigDstKey {
        // SAFETY: sock_ops contexts are accepted by bpf_get_netns_cookie.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.ops as *mut c_void) },
        ip,
        // SAFETY: as above.
        port: unsafe { read_volatile(&(*ops).local_port) },
        _reserved: 0,
    }
}

#[inline(always)]
fn on_established(ctx: &SockOpsContext) {
    // SAFETY: sock_ops contexts are accepted by bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
    // SAFETY: plain read of a map value.
    let Some(orig) = (unsafe { PENDING_CONNECT.get(cookie) }).copied() else {
        return;
    };
    let _ = PENDING_CONNECT.remove(cookie);
    let key = client_key(ctx);
    if let Err(e) = ORIG_DST.insert(key, orig, 0) {
        count(counters::MAP_FULL);
        warn!(
            ctx,
            "ORIG_DST insert failed ({}); the agent will refuse this connection", e
        );
        return;
    }
    count(counters::ORIG_DST_RECORDED);
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

#[inline(always)]
fn on_close(ctx: &SockOpsContext) {
    if ORIG_DST.remove(client_key(ctx)).is_ok() {
        count(counters::ORIG_DST_DELETED);
    }
}
