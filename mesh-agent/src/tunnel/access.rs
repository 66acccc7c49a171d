//! One JSON access-log line per proxied connection (target `access`).
use std::{net::SocketAddr, time::Instant};

use super::splice::Spliced;
use crate::{
    metrics::WorkloadCounters,
    telemetry::{ConnectionLabels, Telemetry},
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
        let spliced = copy.await;
        counters.active.dec();
        self.log(telemetry, spliced);
    }

    pub fn log(&self, telemetry: &Telemetry, spliced: Spliced) {
        let Spliced { sent, received, ok } = spliced;
        let (result, flags) = if ok { ("ok", "-") } else { ("error", "ERROR") };
        let labels = ConnectionLabels::new(
            self.reporter,
            self.transport,
            self.source,
            self.destination,
            flags,
        );
        telemetry.closed.get_or_create(&labels).inc();
        telemetry.sent.get_or_create(&labels).inc_by(sent);
        telemetry.received.get_or_create(&labels).inc_by(received);
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
        tracing::info!(target: "access", "{line}");
    }
}
