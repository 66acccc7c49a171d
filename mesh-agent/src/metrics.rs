//! The agent's own counters, in prometheus-client and registered in the agent's
//! registry (`ferrymesh_*` on :15020/metrics): per enrolled workload, of the
//! config, of the HBONE pool and of certificates, and the eBPF programs' counters
//! (read from their per-CPU map at each scrape). `/stats` shows the same values as
//! JSON.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

pub mod process;

pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, family::Family, MetricType},
    registry::Registry,
};
use serde_json::{json, Map, Value};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabel {
    /// namespace/name
    pub workload: String,
}

macro_rules! workload_counters {
    ($($name:ident: $help:literal,)*) => {
        /// Per workload: what its captured connections did.
        #[derive(Debug, Default, Clone)]
        pub struct WorkloadCounters {
            $(pub $name: Counter,)*
            /// Proxied connections open now.
            pub active: Gauge,
        }

        /// The registered families the per-workload counters belong to.
        #[derive(Debug, Default)]
        struct WorkloadFamilies {
            $($name: Family<WorkloadLabel, Counter>,)*
            active: Family<WorkloadLabel, Gauge>,
        }

        impl WorkloadFamilies {
            fn register(&self, r: &mut Registry) {
                $(r.register(concat!("workload_", stringify!($name)), $help, self.$name.clone());)*
                r.register("workload_active_connections", "Proxied connections open now", self.active.clone());
            }

            fn remove(&self, key: &str) {
                let l = WorkloadLabel { workload: key.to_owned() };
                $(self.$name.remove(&l);)*
                self.active.remove(&l);
            }

            fn counters(&self, key: &str) -> WorkloadCounters {
                let l = WorkloadLabel { workload: key.to_owned() };
                WorkloadCounters {
                    $($name: self.$name.get_or_create(&l).clone(),)*
                    active: self.active.get_or_create(&l).clone(),
                }
            }
        }

        impl WorkloadCounters {
            pub fn json(&self) -> Value {
                let mut m = Map::new();
                $(m.insert(stringify!($name).into(), self.$name.get().into());)*
                m.insert("active".into(), self.active.get().into());
                Value::Object(m)
            }
        }
    };
}

workload_counters! {
    outbound_captured: "Connections the workload's applications made, captured",
    outbound_connected: "Captured connections sent on (any way)",
    outbound_failed: "Captured connections that could not be sent on",
    outbound_no_orig_dst: "Captured connections without a recorded original destination",
    outbound_hbone: "Connections sent on over HBONE",
    outbound_plaintext: "Connections sent on in plaintext",
    outbound_same_node: "Connections to a pod of this node, delivered without a network hop",
    outbound_waypoint: "Captured connections served by the L7 waypoint",
    inbound_captured: "Connections to the workload, captured",
    inbound_delivered: "Connections delivered to the workload's application",
    inbound_failed: "Connections the application did not accept",
    inbound_denied: "Connections refused by AuthorizationPolicy",
    inbound_refused_plaintext: "Plaintext connections refused by STRICT mTLS",
    inbound_closed_by_policy: "Established connections closed because a policy change no longer allows them",
    hbone_refused_tls: "HBONE connections refused at TLS",
    bytes_sent: "Bytes from the workload's side",
    bytes_received: "Bytes to the workload's side",
}

/// What the config source did.
#[derive(Debug, Default)]
pub struct ConfigCounters {
    pub generation: Counter,
    pub reloads: Counter,
    pub errors: Counter,
    /// When the config in force was applied (Unix ms).
    pub applied_unix_ms: Gauge,
    /// Policy parts in force that were not understood and are enforced fail-closed.
    pub degraded: Gauge,
    last_error: Mutex<Option<String>>,
}

impl ConfigCounters {
    fn register(&self, r: &mut Registry) {
        r.register(
            "config_generation",
            "Configs applied",
            self.generation.clone(),
        );
        r.register(
            "config_reloads",
            "Config versions received",
            self.reloads.clone(),
        );
        r.register(
            "config_errors",
            "Config versions refused",
            self.errors.clone(),
        );
        r.register(
            "config_applied_unix_ms",
            "When the config in force was applied",
            self.applied_unix_ms.clone(),
        );
        r.register(
            "config_policy_parts_fail_closed",
            "Policy fields in force that ferrymesh does not support, enforced fail-closed (see the log)",
            self.degraded.clone(),
        );
    }

    /// A config was put in force now.
    pub fn applied(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.applied_unix_ms.set(now);
        self.generation.inc();
    }

    pub fn json(&self) -> Value {
        json!({
            "generation": self.generation.get(),
            "reloads": self.reloads.get(),
            "errors": self.errors.get(),
            "applied_unix_ms": self.applied_unix_ms.get(),
            "policy_parts_fail_closed": self.degraded.get(),
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// Workloads that left whose counters are kept (a pod that comes back continues
/// its totals) before they are pruned.
pub const MAX_IDLE_WORKLOADS: usize = 1024;

#[derive(Debug, Default)]
pub struct Metrics {
    pub config: ConfigCounters,
    families: WorkloadFamilies,
    workloads: Mutex<BTreeMap<String, WorkloadCounters>>,
    /// Local pods whose enrolment failed, blocked (fail closed) and retried: why.
    blocked: Mutex<BTreeMap<String, String>>,
    blocked_count: Gauge,
}

impl Metrics {
    /// The agent's counters, registered in `r`.
    pub fn new(r: &mut Registry) -> Metrics {
        let m = Metrics::default();
        m.families.register(r);
        m.config.register(r);
        r.register(
            "workloads_blocked",
            "Local pods whose enrolment failed: every connection of theirs is refused until it succeeds",
            m.blocked_count.clone(),
        );
        m
    }

    /// Records the pods blocked now (key -> why).
    pub fn set_blocked(&self, blocked: BTreeMap<String, String>) {
        self.blocked_count.set(blocked.len() as i64);
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = blocked;
    }

    pub fn blocked_json(&self) -> Value {
        json!(*self.blocked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counters of a workload, kept across unenrol/enrol so totals never go back.
    pub fn workload(&self, key: &str) -> Arc<WorkloadCounters> {
        let mut w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        let c = w
            .entry(key.to_owned())
            .or_insert_with(|| self.families.counters(key));
        Arc::new(c.clone())
    }

    /// Drops the series of workloads no longer here once there are more than
    /// `MAX_IDLE_WORKLOADS` of them (pods come and go; their counters must not
    /// accumulate for ever). `here` says which keys to keep.
    pub fn prune(&self, here: impl Fn(&str) -> bool) {
        let mut w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = w.keys().filter(|k| !here(k)).cloned().collect();
        if gone.len() <= MAX_IDLE_WORKLOADS {
            return;
        }
        for k in gone {
            w.remove(&k);
            self.families.remove(&k);
        }
    }

    /// (pod, connections open, bytes sent, bytes received) of each workload counted.
    pub fn connection_rows(&self) -> Vec<(String, i64, u64, u64)> {
        let w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        w.iter()
            .map(|(k, c)| {
                let (sent, received) = (c.bytes_sent.get(), c.bytes_received.get());
                (k.clone(), c.active.get(), sent, received)
            })
            .collect()
    }

    pub fn workloads_json(&self) -> Value {
        let w = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        Value::Object(w.iter().map(|(k, c)| (k.clone(), c.json())).collect())
    }

    pub fn set_config_error(&self, e: Option<String>) {
        *self
            .config
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// `ferrymesh_ebpf_events_total{event="connect_captured"}` and the rest of the
/// programs' counters, summed over CPUs when scraped.
pub struct KernelCounters(pub crate::ebpf::KernelHandle);

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCounters")
    }
}

impl KernelCounters {
    pub fn register(self, r: &mut Registry) {
        r.register_collector(Box::new(self));
    }
}

#[derive(EncodeLabelSet, Debug, Clone, Hash, PartialEq, Eq)]
struct EventLabel {
    event: &'static str,
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = self.0.lock().unwrap_or_else(|p| p.into_inner()).counters();
        encode_events(&mut encoder, &counters)
    }
}

fn encode_events(
    encoder: &mut DescriptorEncoder,
    counters: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "ebpf_events",
        "What the eBPF programs did (captures, skips, original-destination records, drops)",
        None,
        MetricType::Counter,
    )?;
    for (event, v) in counters {
        let label = EventLabel { event };
        ConstCounter::new(*v).encode(family.encode_family(&label)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_departed_workloads_are_pruned_past_the_cap() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        for i in 0..=MAX_IDLE_WORKLOADS {
            m.workload(&format!("shop/p{i}")).inbound_captured.inc();
        }
        m.workload("shop/here").inbound_captured.inc();
        m.prune(|k| k == "shop/here");
        let left = m.workloads_json();
        assert_eq!(left.as_object().map(|o| o.len()), Some(1), "{left}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        assert!(!text.contains("shop/p0") && text.contains("shop/here"));
    }

    #[test]
    fn workload_counters_are_prometheus_series_and_json() {
        let mut r = Registry::with_prefix("ferrymesh");
        let m = Metrics::new(&mut r);
        let c = m.workload("shop/client");
        c.outbound_captured.inc();
        m.workload("shop/client").outbound_captured.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        assert!(
            text.contains("ferrymesh_workload_outbound_captured_total{workload=\"shop/client\"} 2"),
            "{text}"
        );
        assert_eq!(m.workloads_json()["shop/client"]["outbound_captured"], 2);
    }

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_events(&mut e, &[("connect_captured", 7), ("map_full", 0)])
        }
    }

    #[test]
    fn kernel_counters_are_one_prometheus_family_by_event() {
        let mut r = Registry::with_prefix("ferrymesh");
        r.register_collector(Box::new(Fixed));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        assert!(
            text.contains("ferrymesh_ebpf_events_total{event=\"connect_captured\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferrymesh_ebpf_events counter"),
            "{text}"
        );
    }
}
