//! Prometheus metrics for L4 (served on :15020 /metrics), with Istio's usual labels.
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use mesh_model::identity::Identity;

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

/// Labels of per-request metrics (the waypoint).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_principal: String,
    pub destination_service: String,
    pub destination_principal: String,
    /// "http" or "grpc".
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: String,
    pub response_flags: &'static str,
}

/// Labels of dry-run verdicts (`istio.io/dry-run` policies): bounded, one series
/// per (layer, action, result).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DryRunLabels {
    /// "l4" (a connection) or "l7" (a request).
    pub layer: &'static str,
    /// The dry-run policies' action: "ALLOW" or "DENY".
    pub policy_action: &'static str,
    /// "would_allow" or "would_deny".
    pub result: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

fn size_histogram() -> Histogram {
    // 64 B .. 64 MiB
    Histogram::new(exponential_buckets(64.0, 4.0, 11))
}

pub struct Telemetry {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub request_bytes: HistogramFamily,
    pub response_bytes: HistogramFamily,
    pub closed: Family<ConnectionLabels, Counter>,
    pub sent: Family<ConnectionLabels, Counter>,
    pub received: Family<ConnectionLabels, Counter>,
    pub refused: Family<ConnectionLabels, Counter>,
    pub dry_run: Family<DryRunLabels, Counter>,
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
        let dry_run = Family::<DryRunLabels, Counter>::default();
        registry.register(
            "authz_dry_run",
            "Verdicts of dry-run (istio.io/dry-run) AuthorizationPolicies, never enforced",
            dry_run.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        let response_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        registry.register(
            "requests",
            "HTTP/gRPC requests through the waypoint",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response",
            request_duration.clone(),
        );
        registry.register("request_bytes", "Request body sizes", request_bytes.clone());
        registry.register(
            "response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        Telemetry {
            registry,
            requests,
            request_duration,
            request_bytes,
            response_bytes,
            closed,
            sent,
            received,
            refused,
            dry_run,
        }
    }
}

impl Telemetry {
    /// To register more metrics (the agent's own counters) before serving.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
