//! Outbound: connections an enrolled pod's application made, steered to 15001.
//! Each is planned (`plan`, pure) and then handed to the waypoint or connected
//! (`connect`) and spliced.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use tokio::net::{TcpListener, TcpStream};

use super::{
    access::{Access, Istio},
    reset::ResetOnDrop,
    splice,
};
use crate::telemetry::Reporter;
use crate::{
    connect,
    datapath::DataPath,
    enforce::{self, Caller, Judging},
    local::Pod,
    plan::{self, Parent, Plan},
};

pub async fn serve(
    listener: TcpListener,
    pod: Arc<Pod>,
    dp: DataPath,
    l7: Arc<crate::waypoint::Runtime>,
) {
    let mut backoff = mesh_infra::backoff::Backoff::accept();
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                backoff.reset();
                let ctx = (pod.clone(), dp.clone(), l7.clone());
                tokio::spawn(handle(conn, peer, ctx));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.key, "outbound accept failed: {e}");
                backoff.wait().await;
            }
        }
    }
}

/// The plan for a connection to `original` from this node's point of view.
pub fn plan_for(dp: &DataPath, original: SocketAddr) -> Result<Plan, plan::PlanError> {
    let state = dp.inputs.state.load();
    let is_local = |ip| dp.pods.contains(ip);
    plan::plan(
        &plan::Inputs {
            state: &state,
            is_local: &is_local,
            trust_domain: &dp.inputs.trust_domain,
            tunnel: dp.inputs.tunnel,
        },
        original,
    )
}

/// Policy attached to the Service `original` addresses (`targetRefs`), judged here,
/// where the Service is known: at L4 (ztunnel's rule) unless a shared waypoint
/// judges its requests.
fn service_refused(
    dp: &DataPath,
    pod: &Pod,
    route: &plan::Route,
    original: SocketAddr,
    peer: SocketAddr,
) -> bool {
    let state = dp.inputs.state.load();
    let Some(service) = state.services_by_vip.get(&original.ip().to_canonical()) else {
        return false;
    };
    let judging = match route {
        plan::Route::SharedWaypoint { .. } => Judging::PerRequest,
        _ => Judging::L4Only,
    };
    let caller = Caller {
        identity: Some(&pod.identity),
        ip: pod.address_like(&original.ip()).unwrap_or(peer.ip()),
    };
    enforce::service_connection(&dp.inputs, service, caller, original, judging).is_err()
}

/// What a connection's handling needs: its pod, the data path, the L7 state.
type Ctx = (Arc<Pod>, DataPath, Arc<crate::waypoint::Runtime>);

async fn handle(conn: TcpStream, peer: SocketAddr, (pod, dp, l7): Ctx) {
    let _in_flight = dp.in_flight();
    let c = &pod.counters;
    c.outbound_captured.inc();
    let _ = conn.set_nodelay(true);
    let conn = ResetOnDrop::new(conn);
    let Some(original) = dp
        .inputs
        .orig_dst
        .as_ref()
        .and_then(|o| o.get(pod.netns.cookie(), peer))
    else {
        c.outbound_no_orig_dst.inc();
        tracing::warn!(pod = %pod.key, %peer, "no original destination recorded for a captured connection; closing it (was the sockops program detached?)");
        return;
    };
    let route = match plan_for(&dp, original) {
        Ok(Plan::Waypoint(parent)) => {
            return waypoint(conn, peer, original, parent, (pod, dp, l7)).await
        }
        Ok(Plan::Connect(route)) => route,
        Err(e) => {
            c.outbound_failed.inc();
            tracing::warn!(pod = %pod.key, %original, "{e}");
            return;
        }
    };
    if service_refused(&dp, &pod, &route, original, peer) {
        c.outbound_failed.inc();
        return;
    }
    let start = Instant::now();
    let Ok(up) = connect::connect(&dp, &pod, &route, peer, Judging::L4Only).await else {
        return;
    };
    let access = Access {
        reporter: "outbound",
        source: Some(&pod.identity),
        destination: up.destination.as_ref(),
        source_addr: up.source,
        destination_addr: route.addr(),
        transport: up.transport.as_str(),
        start,
        istio: Istio {
            reporter: Reporter::Source,
            service_ip: Some(original.ip()),
            security: up.transport.security(),
        },
    };
    access
        .proxied(
            &dp.inputs,
            c,
            splice::proxy_until(conn.take(), up.stream, c, closed(up.registration)),
        )
        .await;
}

/// A destination with L7 configuration: the waypoint terminates HTTP.
async fn waypoint(
    conn: ResetOnDrop,
    peer: SocketAddr,
    original: SocketAddr,
    parent: Parent,
    (pod, dp, l7): Ctx,
) {
    let c = pod.counters.clone();
    c.outbound_waypoint.inc();
    c.active.inc();
    let key = pod.key.clone();
    // The application reached the agent over loopback: the client is the pod's
    // address (for ipBlocks, X-Forwarded-For and metrics), as at L4.
    let client = SocketAddr::new(
        pod.address_like(&original.ip()).unwrap_or(peer.ip()),
        peer.port(),
    );
    let wc = Arc::new(crate::waypoint::conn::Conn {
        source: Some(pod.identity.clone()),
        pod,
        dp,
        l7,
        parent,
        client,
        original,
        at_destination: false,
        trusted_proxies: 0,
    });
    // hyper closes the connection itself (with 400 for bytes that are not HTTP).
    if let Err(e) = crate::waypoint::server::serve(conn.take(), wc).await {
        tracing::info!(pod = %key, %original, "waypoint connection ended: {e}");
    }
    c.active.dec();
}

/// Resolves when a same-node connection's destination policy no longer allows it
/// (never for other routes: their destination re-checks them).
async fn closed(registration: Option<crate::established::Registration>) {
    match registration {
        Some(r) => r.closed().await,
        None => std::future::pending().await,
    }
}
