//! Pure capture decisions, shared by connect4 and connect6.
use mesh_common::{EnrolledNetns, IpWords, AGENT_MARK, AGENT_MARK_MASK, ENROLLED_BLOCKED};

pub enum Outbound {
    Capture,
    /// The pod's enrolment failed: refused.
    Blocked,
    SkipMarked,
    SkipExcluded,
}

const LOOPBACK6: IpWords = IpWords([0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]);

#[inline(always)]
pub fn is_loopback_or_unspecified(ip: &IpWords) -> bool {
    let o = ip.0[3].to_ne_bytes();
    if ip.is_v4_mapped() {
        return o[0] == 127 || ip.0[3] == 0;
    }
    ip.0[0] == 0 && ip.0[1] == 0 && ip.0[2] == 0 && (ip.0[3] == 0 || ip.0[3] == LOOPBACK6.0[3])
}

#[inline(always)]
pub fn outbound(mark: u32, dst: &IpWords, port_excluded: bool, pod: &EnrolledNetns) -> Outbound {
    if mark & AGENT_MARK_MASK == AGENT_MARK {
        return Outbound::SkipMarked;
    }
    if pod.flags & ENROLLED_BLOCKED != 0 && !is_loopback_or_unspecified(dst) {
        return Outbound::Blocked;
    }
    if port_excluded
        || is_loopback_or_unspecified(dst)
        || *dst == pod.pod_ip4
        || *dst == pod.pod_ip6
    {
        return Outbound::SkipExcluded;
    }
    Outbound::Capture
}
