//! Every map the programs share with the agent. Names match `mesh_common::maps`.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, SockHash},
};
use mesh_common::{counters, EnrolledNetns, IpWords, OrigDstKey, SockAddr};

/// Netns cookie -> enrolled pod. Written only by the agent.
#[map]
pub static ENROLLED_NETNS: HashMap<u64, EnrolledNetns> = HashMap::with_max_entries(4096, 0);

/// Socket cookie -> original destination, from connect() until the handshake ends.
/// LRU: a connect() that never completes cannot fill it.
#[map]
pub static PENDING_CONNECT: LruHashMap<u64, SockAddr> = LruHashMap::with_max_entries(65536, 0);

/// (netns cookie, client address, client port) -> original destination; removed when
/// the client socket closes.
#[map]
pub static ORIG_DST: LruHashMap<OrigDstKey, SockAddr> = LruHashMap::with_max_entries(65536, 0);

/// Destination ports never captured outbound (key: port, host order).
#[map]
pub static EXCLUDED_PORTS: HashMap<u32, u32> = HashMap::with_max_entries(256, 0);

/// Pod address -> the agent's inbound (15006) listener inside that pod's netns.
#[map]
pub static INBOUND_LISTENERS: SockHash<IpWords> = SockHash::with_max_entries(8192, 0);

/// Addresses of enrolled pods. An inbound connection to one of them with no agent
/// listener (the agent is gone) is dropped: the mesh fails closed.
#[map]
pub static ENROLLED_ADDRS: HashMap<IpWords, u32> = HashMap::with_max_entries(8192, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}
