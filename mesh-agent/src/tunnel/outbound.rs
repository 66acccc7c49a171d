//! Outbound: connections an enrolled pod's application made, steered to 15001.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};

use super::{access::Access, hbone::pool, inbound, reset::ResetOnDrop, route, splice};
use crate::shared::{Pod, Shared};
use mesh_model::identity::Identity;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CERT_WAIT: Duration = Duration::from_secs(5);

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
    let conn = ResetOnDrop::new(conn);
    let Some(original) = shared
        .orig_dst
        .as_ref()
        .and_then(|o| o.get(pod.netns.cookie(), peer))
    else {
        c.outbound_no_orig_dst.inc();
        tracing::warn!(pod = %pod.key, %peer, "no original destination recorded for a captured connection; closing it (was the sockops program detached?)");
        return;
    };
    let state = shared.state.load();
    if let Some(wp) = crate::waypoint::use_waypoint(&state, original) {
        drop(state);
        // The Service's traffic goes through its shared waypoint: one HBONE stream
        // to the waypoint whose target is the Service address itself.
        let Some(via) = wp
            .addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == original.is_ipv4())
        else {
            c.outbound_failed.inc();
            tracing::warn!(pod = %pod.key, waypoint = %wp.key(), "the waypoint has no address of this family");
            return;
        };
        let destination = shared.identity_of(&wp);
        let source_ip = pod.address_like(&original.ip()).unwrap_or(peer.ip());
        hbone(
            conn,
            &pod,
            &shared,
            destination,
            original,
            Some(via),
            SocketAddr::new(source_ip, peer.port()),
        )
        .await;
        return;
    }
    if let Some(parent) = crate::waypoint::decide(&state, original) {
        drop(state);
        waypoint(conn, peer, original, parent, pod, shared).await;
        return;
    }
    let dest = match route::outbound(&state, original) {
        Ok(d) => d,
        Err(e) => {
            c.outbound_failed.inc();
            tracing::warn!(pod = %pod.key, %original, "{e}");
            return;
        }
    };
    let addr = dest.addr();
    let target = state.workloads_by_ip.get(&addr.ip()).cloned();
    drop(state);
    let source_ip = pod.address_like(&addr.ip()).unwrap_or(peer.ip());
    match target {
        Some(w) if w.captured => {
            if !shared.hbone && shared.local_pod(addr.ip()).is_none() {
                plaintext(conn, &pod, &shared, addr, &dest).await;
            } else if let Some(local) = shared.local_pod(addr.ip()) {
                same_node(conn, &pod, &local, &shared, addr, source_ip).await;
            } else {
                let destination = shared.identity_of(&w);
                hbone(
                    conn,
                    &pod,
                    &shared,
                    destination,
                    addr,
                    None,
                    SocketAddr::new(source_ip, peer.port()),
                )
                .await;
            }
        }
        _ => plaintext(conn, &pod, &shared, addr, &dest).await,
    }
}

/// A destination with L7 configuration: the waypoint terminates HTTP.
async fn waypoint(
    conn: ResetOnDrop,
    peer: SocketAddr,
    original: SocketAddr,
    parent: crate::waypoint::Parent,
    pod: Arc<Pod>,
    shared: Arc<Shared>,
) {
    let c = pod.counters.clone();
    c.outbound_connected.inc();
    c.outbound_waypoint.inc();
    c.active.inc();
    let key = pod.key.clone();
    let wc = Arc::new(crate::waypoint::server::Conn {
        source: Some(pod.identity.clone()),
        pod,
        shared,
        parent,
        client: peer,
        original,
    });
    // hyper closes the connection itself (with 400 for bytes that are not HTTP).
    if let Err(e) = crate::waypoint::server::serve(conn.take(), wc).await {
        tracing::info!(pod = %key, %original, "waypoint connection ended: {e}");
    }
    c.active.dec();
}

/// Both ends on this node: no network, no second proxy; the destination's policy
/// still applies, with the source's identity.
async fn same_node(
    conn: ResetOnDrop,
    pod: &Pod,
    local: &Pod,
    shared: &Shared,
    addr: SocketAddr,
    source_ip: IpAddr,
) {
    let c = &pod.counters;
    local.counters.inbound_captured.inc();
    if shared
        .authorize(local, Some(&pod.identity), source_ip, addr.port())
        .is_err()
    {
        local.counters.inbound_denied.inc();
        c.outbound_failed.inc();
        return;
    }
    let Some(app) = inbound::connect_app(local, addr).await else {
        c.outbound_failed.inc();
        return;
    };
    c.outbound_connected.inc();
    let access = Access {
        reporter: "outbound",
        source: Some(&pod.identity),
        destination: Some(&local.identity),
        source_addr: SocketAddr::new(source_ip, 0),
        destination_addr: addr,
        transport: "same-node",
        start: Instant::now(),
    };
    access
        .proxied(&shared.telemetry, c, splice::proxy(conn.take(), app, c))
        .await;
}

/// Meshed destination on another node: a CONNECT stream over pooled mTLS.
async fn hbone(
    conn: ResetOnDrop,
    pod: &Pod,
    shared: &Shared,
    destination: Identity,
    addr: SocketAddr,
    via: Option<IpAddr>,
    client: SocketAddr,
) {
    let c = &pod.counters;
    let start = Instant::now();
    let Some(cert) = shared.certs.wait(&pod.identity, CERT_WAIT).await else {
        c.outbound_failed.inc();
        tracing::warn!(pod = %pod.key, identity = %pod.identity, "no certificate after {CERT_WAIT:?}; is the CA reachable and does it know this pod's node?");
        return;
    };
    let key = pool::Key {
        source: pod.identity.clone(),
        destination,
        address: via.unwrap_or(addr.ip()),
    };
    let dial = pool::Dial {
        netns: &pod.netns,
        source_cert: cert.certified.clone(),
        roots: shared.roots.clone(),
    };
    // Boxed: the TLS handshake state is large and must not stay in the task for
    // the life of the connection.
    match Box::pin(shared.pool.connect(&key, addr, client, dial)).await {
        Ok((tunnel, guard)) => {
            c.outbound_connected.inc();
            c.outbound_hbone.inc();
            let access = Access {
                reporter: "outbound",
                source: Some(&pod.identity),
                destination: Some(&key.destination),
                source_addr: client,
                destination_addr: addr,
                transport: "hbone",
                start,
            };
            access
                .proxied(
                    &shared.telemetry,
                    c,
                    splice::proxy_tunnel(conn.take(), tunnel, c),
                )
                .await;
            drop(guard);
        }
        Err(e) => {
            c.outbound_failed.inc();
            tracing::info!(pod = %pod.key, destination = %key.destination, %addr, "HBONE failed: {e}");
        }
    }
}

/// A destination outside the mesh: plain TCP from the pod's netns.
async fn plaintext(
    conn: ResetOnDrop,
    pod: &Pod,
    shared: &Shared,
    addr: SocketAddr,
    dest: &route::Destination,
) {
    let c = &pod.counters;
    let start = Instant::now();
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
            tracing::info!(pod = %pod.key, upstream = %addr, "connect failed: {e}");
            return;
        }
        Err(_) => {
            c.outbound_failed.inc();
            tracing::info!(pod = %pod.key, upstream = %addr, "connect timed out after {CONNECT_TIMEOUT:?}; is a NetworkPolicy or a down node in the way?");
            return;
        }
    };
    c.outbound_connected.inc();
    c.outbound_plaintext.inc();
    tracing::debug!(pod = %pod.key, ?dest, "outbound plaintext");
    let access = Access {
        reporter: "outbound",
        source: Some(&pod.identity),
        destination: None,
        source_addr: upstream.local_addr().unwrap_or(addr),
        destination_addr: addr,
        transport: "plaintext",
        start,
    };
    access
        .proxied(
            &shared.telemetry,
            c,
            splice::proxy(conn.take(), upstream, c),
        )
        .await;
}
