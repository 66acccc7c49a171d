//! The log phase: per-request metrics and the access-log line, written when the
//! response body has ended (or was cut), with what the other phases recorded.
use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use mesh_model::identity::Identity;
use opentelemetry::KeyValue;

use super::{reply::ResponseFlag, trace::TraceContext};
use crate::{
    datapath::DataPath,
    telemetry::{otlp::RequestSpan, Peer, Reporter, RequestLabels, Security, ServiceName, Traffic},
};

/// What one request did, for the access log and metrics.
#[derive(Debug, Default, Clone)]
pub struct RequestLog {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub route: String,
    pub destination_service: String,
    pub destination_identity: Option<String>,
    pub upstream: Option<SocketAddr>,
    pub retries: u32,
    pub flags: ResponseFlag,
    pub request_bytes: u64,
    pub trace: Option<TraceContext>,
    pub upstream_ms: Option<u64>,
}

pub struct Finish {
    pub dp: DataPath,
    /// For the access log: the source identity, or the client's address.
    pub source: String,
    /// For metrics: the source identity the mesh proved, and the client's address
    /// (only to find its workload's labels; never a label itself).
    pub principal: Option<Identity>,
    pub client_ip: IpAddr,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub log: RequestLog,
    pub start: Instant,
    pub span: tracing::Span,
    /// The request's exported span, when OTLP export is on.
    pub otel: Option<RequestSpan>,
}

/// A gRPC status as a metric label: the upstream chooses it, so only the 17 codes
/// gRPC defines are kept as they are.
fn grpc_label(status: Option<&str>) -> String {
    match status.map(|s| s.parse::<u8>()) {
        None => String::new(),
        Some(Ok(code)) if code <= 16 => code.to_string(),
        Some(_) => "invalid".into(),
    }
}

impl Finish {
    /// Istio's request labels: the source by its proven identity (and its
    /// workload when the one at its address has that identity), the destination
    /// by the upstream chosen and its identity.
    fn labels(&self, log: &RequestLog, grpc_status: Option<&str>) -> RequestLabels {
        let inputs = &self.dp.inputs;
        let state = inputs.state.load();
        let destination: Option<Identity> = log
            .destination_identity
            .as_deref()
            .and_then(|d| d.parse().ok());
        let security = match (&self.principal, &destination) {
            (Some(_), Some(_)) => Security::MutualTls,
            _ => Security::None,
        };
        RequestLabels {
            traffic: Traffic {
                reporter: Reporter::Waypoint,
                source: &Peer::of(&state, Some(self.client_ip), self.principal.as_ref()),
                destination: &Peer::of(&state, log.upstream.map(|a| a.ip()), destination.as_ref()),
                service: &ServiceName::of_key(&state, &log.destination_service),
                cluster: &inputs.telemetry.cluster,
                protocol: log.protocol,
                flags: log.flags.as_str(),
                security,
            }
            .labels(),
            response_code: self.status,
            grpc_response_status: grpc_label(grpc_status),
        }
    }

    /// The log phase: metrics and one access-log line, when the response ended.
    pub fn emit(mut self, bytes: u64, trailers_grpc: Option<String>, cut: Option<ResponseFlag>) {
        let mut log = std::mem::take(&mut self.log);
        if let Some(flag) = cut {
            log.flags = flag;
        }
        let grpc_status = trailers_grpc.or(self.grpc_status.take());
        let elapsed = self.start.elapsed();
        let t = &self.dp.inputs.telemetry;
        let labels = self.labels(&log, grpc_status.as_deref());
        t.requests.get_or_create(&labels).inc();
        t.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
        t.request_bytes
            .get_or_create(&labels)
            .observe(log.request_bytes as f64);
        t.response_bytes
            .get_or_create(&labels)
            .observe(bytes as f64);
        if let Some(span) = self.otel.take() {
            let name = match log.route.as_str() {
                "" => log.method.clone(),
                route => format!("{} {route}", log.method),
            };
            span.end(name, span_attributes(&log, &labels, bytes), self.status);
        }
        let trace = log.trace.as_ref();
        let line = serde_json::json!({
            "reporter": "waypoint",
            "method": log.method,
            "authority": log.authority,
            "path": log.path,
            "protocol": log.protocol,
            "status": self.status,
            "grpc_status": grpc_status,
            "response_flags": log.flags.as_str(),
            "route": log.route,
            "destination_service": log.destination_service,
            "upstream": log.upstream.map(|a| a.to_string()),
            "upstream_ms": log.upstream_ms,
            "retries": log.retries,
            "duration_ms": elapsed.as_millis() as u64,
            "bytes_sent": log.request_bytes,
            "bytes_received": bytes,
            "src.identity": self.source,
            "dst.identity": log.destination_identity,
            "trace_id": trace.map(|t| t.trace_id.as_str()),
            "span_id": trace.map(|t| t.span_id.as_str()),
            "parent_span_id": trace.and_then(|t| t.parent_id.as_deref()),
        });
        let _e = self.span.enter();
        t.access(&line);
    }
}

/// A request span's attributes: OpenTelemetry's HTTP conventions and the peers'
/// workload names as Istio labels them (high-cardinality values are fine on a span).
fn span_attributes(log: &RequestLog, labels: &RequestLabels, bytes: u64) -> Vec<KeyValue> {
    let l = &labels.traffic;
    let mut attrs = vec![
        KeyValue::new("http.request.method", log.method.clone()),
        KeyValue::new("url.path", log.path.clone()),
        KeyValue::new("server.address", log.authority.clone()),
        KeyValue::new("http.response.status_code", i64::from(labels.response_code)),
        KeyValue::new("http.request.body.size", log.request_bytes as i64),
        KeyValue::new("http.response.body.size", bytes as i64),
        KeyValue::new("response_flags", l.response_flags),
        KeyValue::new("request_protocol", l.request_protocol),
        KeyValue::new("source_workload", l.source_workload.clone()),
        KeyValue::new(
            "source_workload_namespace",
            l.source_workload_namespace.clone(),
        ),
        KeyValue::new("source_principal", l.source_principal.clone()),
        KeyValue::new("destination_workload", l.destination_workload.clone()),
        KeyValue::new(
            "destination_workload_namespace",
            l.destination_workload_namespace.clone(),
        ),
        KeyValue::new("destination_principal", l.destination_principal.clone()),
        KeyValue::new("destination_service", l.destination_service.clone()),
        KeyValue::new("upstream_retries", i64::from(log.retries)),
    ];
    if !log.route.is_empty() {
        attrs.push(KeyValue::new("http.route", log.route.clone()));
    }
    if let Some(upstream) = log.upstream {
        attrs.push(KeyValue::new("upstream_address", upstream.to_string()));
    }
    if !labels.grpc_response_status.is_empty() {
        attrs.push(KeyValue::new(
            "rpc.grpc.status_code",
            labels.grpc_response_status.clone(),
        ));
    }
    attrs
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_status_labels_are_bounded() {
        for (s, want) in [
            (None, ""),
            (Some("0"), "0"),
            (Some("16"), "16"),
            (Some("17"), "invalid"),
            (Some("x-random-123"), "invalid"),
        ] {
            assert_eq!(super::grpc_label(s), want, "{s:?}");
        }
    }
}
