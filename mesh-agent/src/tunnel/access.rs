//! One JSON access-log line per proxied connection (target `access`), and Istio's
//! TCP metrics for it (opened when the copy starts; closed and bytes at its end).
use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use super::splice::Spliced;
use crate::{
    datapath::Inputs,
    metrics::WorkloadCounters,
    telemetry::{Peer, Reporter, Security, ServiceName, Telemetry, Traffic, TrafficLabels},
};
use mesh_model::identity::Identity;

pub struct Access<'a> {
    /// "outbound" (source side) or "inbound" (destination side).
    pub reporter: &'static str,
    pub source: Option<&'a Identity>,
    pub destination: Option<&'a Identity>,
    pub source_addr: SocketAddr,
    pub destination_addr: SocketAddr,
    /// "hbone", "plaintext" or "same-node".
    pub transport: &'static str,
    pub start: Instant,
    /// Istio's labels of the connection (flags set at its end).
    pub labels: TrafficLabels,
}

/// One end of a connection: the identity the mesh proved (or its own pod's), and
/// its address.
pub type End<'a> = (Option<&'a Identity>, IpAddr);

/// Istio's labels of a connection from `source` to `destination`; `service_ip`
/// is the address the application asked for (a Service's VIP names the Service).
pub fn labels(
    inputs: &Inputs,
    reporter: Reporter,
    (source, destination): (End<'_>, End<'_>),
    service_ip: Option<IpAddr>,
    security: Security,
) -> TrafficLabels {
    let state = inputs.state.load();
    let service = service_ip
        .and_then(|ip| state.services_by_vip.get(&ip.to_canonical()))
        .map(|s| ServiceName::of(s))
        .unwrap_or_else(ServiceName::unknown);
    Traffic {
        reporter,
        source: &Peer::of(&state, Some(source.1), source.0),
        destination: &Peer::of(&state, Some(destination.1), destination.0),
        service: &service,
        cluster: &inputs.telemetry.cluster,
        protocol: "tcp",
        flags: "-",
        security,
    }
    .labels()
}

impl Access<'_> {
    /// Runs a connection's copy with the active gauge held, then logs its outcome.
    pub async fn proxied(
        &self,
        telemetry: &Telemetry,
        counters: &WorkloadCounters,
        copy: impl std::future::Future<Output = Spliced>,
    ) {
        counters.active.inc();
        telemetry.tcp_opened.get_or_create(&self.labels).inc();
        let spliced = copy.await;
        counters.active.dec();
        self.log(telemetry, spliced);
    }

    pub fn log(&self, telemetry: &Telemetry, spliced: Spliced) {
        let Spliced { sent, received, ok } = spliced;
        let (result, flags) = if ok { ("ok", "-") } else { ("error", "ERROR") };
        let labels = TrafficLabels {
            response_flags: flags,
            ..self.labels.clone()
        };
        telemetry.tcp_closed.get_or_create(&labels).inc();
        telemetry.tcp_sent.get_or_create(&labels).inc_by(sent);
        telemetry
            .tcp_received
            .get_or_create(&labels)
            .inc_by(received);
        let line = serde_json::json!({
            "reporter": self.reporter,
            "transport": self.transport,
            "src.identity": self.source.map(ToString::to_string),
            "dst.identity": self.destination.map(ToString::to_string),
            "src.addr": self.source_addr.to_string(),
            "dst.addr": self.destination_addr.to_string(),
            "bytes_sent": sent,
            "bytes_received": received,
            "duration_ms": self.start.elapsed().as_millis() as u64,
            "result": result,
        });
        telemetry.access(&line);
    }
}
