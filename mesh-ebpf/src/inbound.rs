//! sk_lookup (attached to enrolled pods' netns only): inbound capture. A TCP
//! connection to an enrolled pod's address is handed to the agent's 15006 listener
//! in that pod's netns, except
//! - connections to the HBONE port (the agent's own 15008 listener takes them; every
//!   other agent port is steered like an app port, and the agent refuses it),
//! - the agent's delivery connections (source 127.0.0.6, or the pod's own address
//!   for IPv6, which also covers a pod talking to itself),
//! - loopback destinations (they never come from outside the pod).
//!
//! What it cannot attribute to an enrolled pod's address (a secondary or link-local
//! address, or the pod's address after the agent left) is dropped: never delivered
//! around the mesh.
use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use mesh_common::{counters, ports, IpWords, AF_INET, INBOUND_DELIVERY_SRC_V4};

use crate::{
    decide::is_loopback_or_unspecified,
    maps::{count, ENROLLED_ADDRS, INBOUND_LISTENERS},
};

const IPPROTO_TCP: u32 = 6;

#[sk_lookup]
pub fn mesh_sk_lookup(ctx: SkLookupContext) -> u32 {
    try_lookup(&ctx)
}

#[inline(always)]
fn try_lookup(ctx: &SkLookupContext) -> u32 {
    let l = ctx.lookup;
    // SAFETY: the verifier guarantees ctx fields are readable for this program type.
    unsafe {
        if (*l).protocol != IPPROTO_TCP {
            return SK_PASS;
        }
        let port = (*l).local_port as u16;
        if port == ports::HBONE {
            return SK_PASS;
        }
        // Read every field at a constant offset first (see orig_dst.rs for why).
        let family = read_volatile(&(*l).family);
        let remote4 = read_volatile(&(*l).remote_ip4);
        let local4 = read_volatile(&(*l).local_ip4);
        let remote6 = [
            read_volatile(&(*l).remote_ip6[0]),
            read_volatile(&(*l).remote_ip6[1]),
            read_volatile(&(*l).remote_ip6[2]),
            read_volatile(&(*l).remote_ip6[3]),
        ];
        let local6 = [
            read_volatile(&(*l).local_ip6[0]),
            read_volatile(&(*l).local_ip6[1]),
            read_volatile(&(*l).local_ip6[2]),
            read_volatile(&(*l).local_ip6[3]),
        ];
        let (local, remote) = if family == u32::from(AF_INET) {
            if remote4 == u32::from_ne_bytes(INBOUND_DELIVERY_SRC_V4) {
                count(counters::LOOKUP_SKIPPED_DELIVERY);
                return SK_PASS;
            }
            (IpWords::from_v4_raw(local4), IpWords::from_v4_raw(remote4))
        } else {
            (IpWords(local6), IpWords(remote6))
        };
        if local == remote {
            count(counters::LOOKUP_SKIPPED_DELIVERY);
            return SK_PASS;
        }
        if is_loopback_or_unspecified(&local) {
            return SK_PASS;
        }
        if INBOUND_LISTENERS.redirect_sk_lookup(ctx, local, 0).is_ok() {
            count(counters::LOOKUP_STEERED);
            return SK_PASS;
        }
        if ENROLLED_ADDRS.get(local).is_some() {
            // Enrolled, but the agent's listener is gone: refuse, never deliver
            // around the mesh.
            count(counters::LOOKUP_DROPPED_NO_AGENT);
            return SK_DROP;
        }
        count(counters::LOOKUP_DROPPED_UNATTRIBUTED);
        SK_DROP
    }
}
