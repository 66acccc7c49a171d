//! Prometheus metrics for L4 (served on :15020 /metrics), with Istio's usual labels.
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::identity::Identity;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: &'static str,
    pub transport: &'static str,
    pub source_principal: String,
    pub source_workload_namespace: String,
    pub destination_principal: String,
    pub destination_workload_namespace: String,
    /// "-" for none, "DENIED", "STRICT" (plaintext refused) or "ERROR".
    pub response_flags: &'static str,
}

impl ConnectionLabels {
    pub fn new(
        reporter: &'static str,
        transport: &'static str,
        source: Option<&Identity>,
        destination: Option<&Identity>,
        response_flags: &'static str,
    ) -> Self {
        let principal = |i: Option<&Identity>| {
            i.map(Identity::to_string)
                .unwrap_or_else(|| "unknown".into())
        };
        let namespace = |i: Option<&Identity>| {
            i.map(|i| i.namespace.clone())
                .unwrap_or_else(|| "unknown".into())
        };
        ConnectionLabels {
            reporter,
            transport,
            source_principal: principal(source),
            source_workload_namespace: namespace(source),
            destination_principal: principal(destination),
            destination_workload_namespace: namespace(destination),
            response_flags,
        }
    }
}

pub struct Telemetry {
    registry: Registry,
    pub closed: Family<ConnectionLabels, Counter>,
    pub sent: Family<ConnectionLabels, Counter>,
    pub received: Family<ConnectionLabels, Counter>,
    pub refused: Family<ConnectionLabels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrymesh");
        let closed = Family::<ConnectionLabels, Counter>::default();
        let sent = Family::<ConnectionLabels, Counter>::default();
        let received = Family::<ConnectionLabels, Counter>::default();
        let refused = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "tcp_connections_closed",
            "Proxied TCP connections that ended",
            closed.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            "Bytes sent from source to destination",
            sent.clone(),
        );
        registry.register(
            "tcp_received_bytes",
            "Bytes sent from destination back to source",
            received.clone(),
        );
        registry.register(
            "tcp_connections_refused",
            "Connections refused by policy or STRICT mTLS",
            refused.clone(),
        );
        Telemetry {
            registry,
            closed,
            sent,
            received,
            refused,
        }
    }
}

impl Telemetry {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
