//! Outbound: connections an enrolled pod's application made, steered to 15001.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};

use super::{inbound, route, splice};
use crate::enrol::{Pod, Shared};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, pod: Arc<Pod>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                tokio::spawn(handle(conn, peer, pod.clone(), shared.clone()));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.key, "outbound accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(conn: TcpStream, peer: SocketAddr, pod: Arc<Pod>, shared: Arc<Shared>) {
    let c = &pod.counters;
    c.outbound_captured.inc();
    let _ = conn.set_nodelay(true);
    let Some(original) = shared.orig_dst.get(pod.netns.cookie(), peer) else {
        c.outbound_no_orig_dst.inc();
        tracing::warn!(pod = %pod.key, %peer, "no original destination recorded for a captured connection; closing it (was the sockops program detached?)");
        return;
    };
    let state = shared.state.load();
    let dest = match route::outbound(&state, original) {
        Ok(d) => d,
        Err(e) => {
            c.outbound_failed.inc();
            tracing::warn!(pod = %pod.key, %original, "{e}");
            return;
        }
    };
    drop(state);
    let addr = dest.addr();
    // Same node: skip the network and the second proxy; deliver straight into the
    // destination pod, counted there as inbound (its policy will apply here too).
    if let Some(local) = shared.local_pod(addr.ip()) {
        local.counters.inbound_captured.inc();
        let Some(app) = inbound::connect_app(&local, addr).await else {
            c.outbound_failed.inc();
            return;
        };
        c.outbound_connected.inc();
        tracing::debug!(pod = %pod.key, %original, ?dest, "same-node delivery");
        c.active.inc();
        splice::proxy(conn, app, c).await;
        c.active.dec();
        return;
    }
    let upstream = match pod.netns.outbound_socket(&addr, None) {
        Ok(s) => tokio::time::timeout(CONNECT_TIMEOUT, s.connect(addr)).await,
        Err(e) => {
            c.outbound_failed.inc();
            tracing::warn!(pod = %pod.key, "{e}");
            return;
        }
    };
    let upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            c.outbound_failed.inc();
            tracing::info!(pod = %pod.key, %original, upstream = %addr, "connect failed: {e}");
            return;
        }
        Err(_) => {
            c.outbound_failed.inc();
            tracing::info!(pod = %pod.key, %original, upstream = %addr, "connect timed out after {CONNECT_TIMEOUT:?}; is a NetworkPolicy or a down node in the way?");
            return;
        }
    };
    c.outbound_connected.inc();
    tracing::debug!(pod = %pod.key, %original, ?dest, "outbound connected");
    c.active.inc();
    splice::proxy(conn, upstream, c).await;
    c.active.dec();
}
