//! Inbound: connections to an enrolled pod's addresses, steered to 15006 by sk_lookup.
//! The accepted socket's local address is the original destination.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use mesh_common::INBOUND_DELIVERY_SRC_V4;
use tokio::net::{TcpListener, TcpStream};

use super::{
    access::{Access, Istio},
    reset::ResetOnDrop,
    splice,
};
use crate::telemetry::{Reporter, Security};
use crate::{
    datapath::DataPath,
    enforce::{self, Caller, Judging},
    guard::{self, Guard, Reason},
    local::Pod,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, pod: Arc<Pod>, dp: DataPath) {
    let mut backoff = mesh_infra::backoff::Backoff::accept();
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                backoff.reset();
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let Ok(permit) = dp.inputs.guard.admit(peer.ip()) else {
                    drop(ResetOnDrop::new(conn));
                    continue;
                };
                let (pod, dp) = (pod.clone(), dp.clone());
                tokio::spawn(async move {
                    handle(conn, peer, pod, dp).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(pod = %pod.key, "inbound accept failed: {e}");
                backoff.wait().await;
            }
        }
    }
}

/// The pod's effective PeerAuthentication is STRICT on `port`: plaintext inbound
/// to it is refused.
fn strict(dp: &DataPath, pod: &Pod, port: u16) -> bool {
    let state = dp.inputs.state.load();
    pod.addresses
        .first()
        .and_then(|a| state.workloads_by_ip.get(a))
        .is_some_and(|w| w.mtls.strict_on(port))
}

/// Source address of a delivery connection: one the sk_lookup program lets through.
/// IPv4 uses 127.0.0.6; IPv6 uses the pod's own address (the program skips
/// connections whose source equals their destination).
pub fn delivery_source(original: &SocketAddr) -> IpAddr {
    match original.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(INBOUND_DELIVERY_SRC_V4)),
        v6 => v6,
    }
}

/// Connects to the application in `pod` at `original`, from a source the sk_lookup
/// program lets through, and counts the delivery on the pod.
pub async fn connect_app(pod: &Pod, original: SocketAddr, guard: &Guard) -> Option<TcpStream> {
    let c = &pod.counters;
    if guard::is_agent_port(original.port()) {
        // Delivering would reach the agent's own listener again: a loop.
        c.inbound_failed.inc();
        guard.refuse(Reason::AgentPort, || {
            tracing::warn!(pod = %pod.key, %original, "connection refused: the destination port is one of the agent's own (a loop)");
        });
        return None;
    }
    let app = match pod
        .netns
        .outbound_socket(&original, Some(delivery_source(&original)))
    {
        Ok(s) => tokio::time::timeout(CONNECT_TIMEOUT, s.connect(original)).await,
        Err(e) => {
            c.inbound_failed.inc();
            tracing::warn!(pod = %pod.key, "{e}");
            return None;
        }
    };
    match app {
        Ok(Ok(s)) => {
            c.inbound_delivered.inc();
            Some(s)
        }
        Ok(Err(e)) => {
            c.inbound_failed.inc();
            tracing::info!(pod = %pod.key, %original, "delivery to the application failed: {e}; is it listening?");
            None
        }
        Err(_) => {
            c.inbound_failed.inc();
            tracing::info!(pod = %pod.key, %original, "delivery to the application timed out");
            None
        }
    }
}

async fn handle(conn: TcpStream, peer: SocketAddr, pod: Arc<Pod>, dp: DataPath) {
    let _in_flight = dp.in_flight();
    let c = &pod.counters;
    let start = std::time::Instant::now();
    c.inbound_captured.inc();
    let _ = conn.set_nodelay(true);
    let local = conn.local_addr();
    let conn = ResetOnDrop::new(conn);
    let original = match local {
        Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        Err(e) => {
            c.inbound_failed.inc();
            tracing::warn!(pod = %pod.key, "inbound: no local address: {e}");
            return;
        }
    };
    if strict(&dp, &pod, original.port()) {
        c.inbound_refused_plaintext.inc();
        tracing::warn!(pod = %pod.key, %peer, %original, "plaintext connection refused: PeerAuthentication is STRICT on this port");
        let labels = crate::telemetry::ConnectionLabels::new(
            "inbound",
            "plaintext",
            None,
            Some(&pod.identity),
            "STRICT",
        );
        dp.inputs.telemetry.refused.get_or_create(&labels).inc();
        dp.inputs
            .telemetry
            .denials
            .record(mesh_model::denial::Denial {
                unix_ms: crate::telemetry::denials::now_ms(),
                layer: mesh_model::denial::Layer::L4,
                source: format!("plaintext {}", peer.ip()),
                destination: pod.key.clone(),
                target: original.to_string(),
                request: None,
                policy: None,
                reason: "plaintext refused: PeerAuthentication is STRICT on this port".into(),
            });
        return;
    }
    let caller = Caller {
        identity: None,
        ip: peer.ip(),
    };
    if enforce::connection(&dp.inputs, &pod, caller, original, Judging::L4Only).is_err() {
        c.inbound_denied.inc();
        return;
    }
    let registration =
        dp.established
            .register(&pod, caller.identity, caller.ip, original, Judging::L4Only);
    let Some(app) = connect_app(&pod, original, &dp.inputs.guard).await else {
        return;
    };
    let access = Access {
        reporter: "inbound",
        source: None,
        destination: Some(&pod.identity),
        source_addr: peer,
        destination_addr: original,
        transport: "plaintext",
        start,
        istio: Istio {
            reporter: Reporter::Destination,
            service_ip: None,
            security: Security::None,
        },
    };
    let copy = splice::proxy_until(conn.take(), app, c, registration.closed());
    access.proxied(&dp.inputs, c, copy).await;
}
