//! Counters the agent keeps, per enrolled workload and for the agent as a whole.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

/// Per workload: what its captured connections did.
#[derive(Debug, Default, Serialize)]
pub struct WorkloadCounters {
    pub outbound_captured: Counter,
    pub outbound_connected: Counter,
    pub outbound_failed: Counter,
    pub outbound_no_orig_dst: Counter,
    pub inbound_captured: Counter,
    pub inbound_delivered: Counter,
    pub inbound_failed: Counter,
    pub inbound_denied: Counter,
    pub inbound_refused_plaintext: Counter,
    pub hbone_refused_tls: Counter,
    pub outbound_hbone: Counter,
    /// Captured connections served by the L7 waypoint.
    pub outbound_waypoint: Counter,
    pub outbound_plaintext: Counter,
    /// Connections to a pod of this node, delivered without a network hop.
    pub outbound_same_node: Counter,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub active: ActiveGauge,
}

#[derive(Debug, Default)]
pub struct ActiveGauge(AtomicU64);
impl ActiveGauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
impl Serialize for ActiveGauge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ConfigCounters {
    pub generation: Counter,
    pub reloads: Counter,
    pub errors: Counter,
    /// When the config in force was applied (Unix ms).
    pub applied_unix_ms: Counter,
    #[serde(skip)]
    pub last_error: Mutex<Option<String>>,
}

impl ConfigCounters {
    /// A config was put in force now.
    pub fn applied(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.applied_unix_ms.0.store(now, Ordering::Relaxed);
        self.generation.inc();
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub config: ConfigCounters,
    workloads: Mutex<BTreeMap<String, Arc<WorkloadCounters>>>,
}

impl Metrics {
    /// Counters of a workload, kept across unenrol/enrol so totals never go back.
    pub fn workload(&self, key: &str) -> Arc<WorkloadCounters> {
        let mut w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(key.to_owned()).or_default().clone()
    }
    pub fn workloads_json(&self) -> serde_json::Value {
        let w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_value(&*w).unwrap_or_default()
    }
    pub fn last_config_error(&self) -> Option<String> {
        self.config
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn set_config_error(&self, e: Option<String>) {
        *self
            .config
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = e;
    }
}
