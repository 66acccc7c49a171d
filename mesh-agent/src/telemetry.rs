//! Prometheus metrics (served on :15020 /metrics): Istio's standard metrics with
//! Istio's labels (`istio`), and the agent's own under `ferrymesh_`.
pub mod access_log;
pub mod denials;
mod istio;
pub mod otlp;

pub use istio::{
    Peer, Reporter, RequestLabels, Security, ServiceName, Traffic, TrafficLabels, DEFAULT_CLUSTER,
    UNKNOWN,
};
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

/// Istio's request duration buckets (milliseconds).
const DURATION_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_MS)
}

fn size_histogram() -> Histogram {
    // 1 B .. 1 GB, a bucket per power of ten.
    Histogram::new(exponential_buckets(1.0, 10.0, 10))
}

/// Istio's standard metrics (unprefixed, as Istio names them) and the agent's own
/// (`ferrymesh_*`), in one registry served on :15020.
pub struct Telemetry {
    registry: Registry,
    /// `source_cluster` / `destination_cluster`.
    pub cluster: String,
    pub tcp_opened: Family<TrafficLabels, Counter>,
    pub tcp_closed: Family<TrafficLabels, Counter>,
    pub tcp_sent: Family<TrafficLabels, Counter>,
    pub tcp_received: Family<TrafficLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub request_bytes: HistogramFamily,
    pub response_bytes: HistogramFamily,
    pub refused: Family<ConnectionLabels, Counter>,
    pub dry_run: Family<DryRunLabels, Counter>,
    /// The last refusals (`/denials`, `meshctl denials`).
    pub denials: denials::Denials,
    /// How access-log lines are written.
    pub access_log: access_log::AccessLogFormat,
    /// Request spans exported over OTLP (off unless `--otlp-endpoint`).
    pub spans: otlp::Spans,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(DEFAULT_CLUSTER)
    }
}

impl Telemetry {
    /// The metrics of an agent in `cluster` (Istio's cluster name).
    pub fn new(cluster: &str) -> Self {
        let mut registry = Registry::default();
        let tcp = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<TrafficLabels, Counter>::default();
            r.register(name, help, f.clone());
            f
        };
        let tcp_opened = tcp(
            &mut registry,
            "istio_tcp_connections_opened",
            "TCP connections opened",
        );
        let tcp_closed = tcp(
            &mut registry,
            "istio_tcp_connections_closed",
            "TCP connections closed",
        );
        let tcp_sent = tcp(
            &mut registry,
            "istio_tcp_sent_bytes",
            "Bytes sent from source to destination on TCP connections",
        );
        let tcp_received = tcp(
            &mut registry,
            "istio_tcp_received_bytes",
            "Bytes sent from destination back to source on TCP connections",
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        let response_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        registry.register("istio_requests", "HTTP/gRPC requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from the request head to the end of the response",
            request_duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        let own = registry.sub_registry_with_prefix("ferrymesh");
        let refused = Family::<ConnectionLabels, Counter>::default();
        own.register(
            "tcp_connections_refused",
            "Connections refused by policy or STRICT mTLS",
            refused.clone(),
        );
        let dry_run = Family::<DryRunLabels, Counter>::default();
        own.register(
            "authz_dry_run",
            "Verdicts of dry-run (istio.io/dry-run) AuthorizationPolicies, never enforced",
            dry_run.clone(),
        );
        Telemetry {
            registry,
            cluster: cluster.to_owned(),
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            requests,
            request_duration,
            request_bytes,
            response_bytes,
            refused,
            dry_run,
            denials: denials::Denials::default(),
            access_log: access_log::AccessLogFormat::default(),
            spans: otlp::Spans::default(),
        }
    }
}

impl Telemetry {
    /// The unprefixed registry (conventional names such as `process_*`).
    pub fn root_registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// To register more of the agent's own metrics (`ferrymesh_*`) before serving.
    pub fn registry(&mut self) -> &mut Registry {
        self.registry.sub_registry_with_prefix("ferrymesh")
    }

    /// Writes one access-log line (target `access`) in the configured format.
    pub fn access(&self, record: &serde_json::Value) {
        let line = self.access_log.render(record);
        tracing::info!(target: "access", "{line}");
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
