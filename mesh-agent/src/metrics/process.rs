//! Scrape-time gauges the dashboards need: the process's own RSS and CPU (the
//! Prometheus client convention's `process_*` names, from /proc/self), and each
//! held workload certificate's time left (`ferrymesh_certificate_expiry_seconds`).
use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::identity::manager::CertManager;

/// `process_resident_memory_bytes` and `process_cpu_seconds_total`.
#[derive(Debug)]
pub struct Process;

/// /proc reports CPU times in USER_HZ ticks, 100 per second on Linux whatever
/// the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// (resident bytes, CPU seconds) of this process.
fn read_self() -> (i64, f64) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .unwrap_or(0);
    // utime and stime are the 14th and 15th fields, after the command's ')'.
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    (rss_kib * 1024, ticks as f64 / USER_HZ)
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (rss, cpu) = read_self();
        ConstGauge::new(rss).encode(e.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the agent",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(cpu).encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of the agent",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[derive(EncodeLabelSet, Debug, Clone, Hash, PartialEq, Eq)]
struct IdentityLabel {
    identity: String,
}

/// `ferrymesh_certificate_expiry_seconds{identity}`: one series per identity of
/// a pod on this node that holds a certificate.
pub struct CertExpiry(pub Arc<CertManager>);

impl std::fmt::Debug for CertExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertExpiry")
    }
}

impl Collector for CertExpiry {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = e.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until each held workload certificate expires",
            None,
            MetricType::Gauge,
        )?;
        for (identity, left) in self.0.summary() {
            if let Some(left) = left {
                let label = IdentityLabel { identity };
                ConstGauge::new(left).encode(family.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

/// Registers the process gauges in `root` (unprefixed) and the certificates'
/// in `own` (the agent's `ferrymesh_` registry).
pub fn register(root: &mut Registry, certs: Arc<CertManager>) {
    root.register_collector(Box::new(Process));
    root.sub_registry_with_prefix("ferrymesh")
        .register_collector(Box::new(CertExpiry(certs)));
}
