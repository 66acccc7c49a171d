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
    telemetry::{Peer, Reporter, Security, ServiceName, Traffic, TrafficLabels},
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
    /// What Istio's labels need besides the ends (rebuilt when the connection
    /// opens and when it ends rather than held: an idle connection keeps no
    /// label strings).
    pub istio: Istio,
}

/// Who reports the connection, which address the application asked for (a
/// Service's VIP names the Service) and how it is secured.
#[derive(Debug, Clone, Copy)]
pub struct Istio {
    pub reporter: Reporter,
    pub service_ip: Option<IpAddr>,
    pub security: Security,
}

impl Access<'_> {
    /// Istio's labels of the connection, with `flags`.
    fn labels(&self, inputs: &Inputs, flags: &'static str) -> TrafficLabels {
        let state = inputs.state.load();
        let service = self
            .istio
            .service_ip
            .and_then(|ip| state.services_by_vip.get(&ip.to_canonical()))
            .map(|s| ServiceName::of(s))
            .unwrap_or_else(ServiceName::unknown);
        Traffic {
            reporter: self.istio.reporter,
            source: &Peer::of(&state, Some(self.source_addr.ip()), self.source),
            destination: &Peer::of(&state, Some(self.destination_addr.ip()), self.destination),
            service: &service,
            cluster: &inputs.telemetry.cluster,
            protocol: "tcp",
            flags,
            security: self.istio.security,
        }
        .labels()
    }

    /// Runs a connection's copy with the active gauge held, then logs its outcome.
    pub async fn proxied(
        &self,
        inputs: &Inputs,
        counters: &WorkloadCounters,
        copy: impl std::future::Future<Output = Spliced>,
    ) {
        counters.active.inc();
        inputs
            .telemetry
            .tcp_opened
            .get_or_create(&self.labels(inputs, "-"))
            .inc();
        let spliced = copy.await;
        counters.active.dec();
        self.log(inputs, spliced);
    }

    pub fn log(&self, inputs: &Inputs, spliced: Spliced) {
        let Spliced { sent, received, ok } = spliced;
        let (result, flags) = if ok { ("ok", "-") } else { ("error", "ERROR") };
        let labels = self.labels(inputs, flags);
        let telemetry = &inputs.telemetry;
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
