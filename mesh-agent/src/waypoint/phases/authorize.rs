//! Authorize: RequestAuthentication (JWT: a bad token answers 401 `UAEX`) then
//! AuthorizationPolicy with the request's attributes (403 `AZ`), through the one
//! enforcement point; at the edge for the gateway's own workload first, then for
//! the destination workload. A validated token's claims may be copied to headers.
use http::{header, request::Parts, HeaderValue, StatusCode};
use mesh_model::{
    authz,
    identity::Identity,
    l7::jwt,
    state::{State, WorkloadInfo},
};

use super::choose::Chosen;
use crate::{
    enforce::{self, Caller},
    plan::Parent,
    waypoint::{
        conn::Conn,
        log::RequestLog,
        reply::{LocalReply, ResponseFlag},
    },
};

fn authenticate(
    conn: &Conn,
    state: &State,
    target: &WorkloadInfo,
    parts: &mut Parts,
    log: &RequestLog,
) -> Result<Option<jwt::Authenticated>, LocalReply> {
    let rules: Vec<&jwt::JwtPolicy> = state
        .l7
        .jwt
        .iter()
        .filter(|p| p.applies(target.namespace(), target.labels()))
        .collect();
    for h in jwt::claim_headers(&rules) {
        parts.headers.remove(h);
    }
    jwt::authenticate(&rules, &parts.headers).map_err(|e| {
        tracing::info!(route = %log.route, source = %conn.source_key(), destination = %target.key(), "{e}");
        LocalReply::new(
            StatusCode::UNAUTHORIZED,
            "invalid token\n",
            ResponseFlag::Unauthenticated,
        )
        .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    })
}

fn forbidden() -> LocalReply {
    LocalReply::new(
        StatusCode::FORBIDDEN,
        "access denied\n",
        ResponseFlag::Unauthorized,
    )
}

/// The client's address for policy (`remoteIpBlocks`, `remote.ip`): with `trusted`
/// proxies in front (an edge's `--trusted-proxies`), the X-Forwarded-For entry
/// that many from the right, as Envoy's `xff_num_trusted_hops`; with none, or
/// when the header has fewer entries or one that is not an address, the peer's.
pub fn remote_ip(
    headers: &http::HeaderMap,
    peer: std::net::IpAddr,
    trusted: u8,
) -> std::net::IpAddr {
    if trusted == 0 {
        return peer.to_canonical();
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(usize::from(trusted))
        .and_then(|i| entries[i].parse::<std::net::IpAddr>().ok())
        .map_or(peer.to_canonical(), |ip| ip.to_canonical())
}

/// The request's attributes for policy.
fn attributes<'r>(
    conn: &Conn,
    parts: &'r Parts,
    path: &'r str,
    log: &'r RequestLog,
    authn: Option<&'r jwt::Authenticated>,
) -> authz::Request<'r> {
    authz::Request {
        method: parts.method.as_str(),
        path,
        host: &log.authority,
        headers: &parts.headers,
        principal: authn.map(|a| a.principal.as_str()),
        claims: authn.map(|a| &a.claims),
        remote_ip: remote_ip(&parts.headers, conn.client.ip(), conn.trusted_proxies),
    }
}

/// The policies attached to the Service this request is addressed to.
fn service_policy(conn: &Conn, parts: &Parts, log: &RequestLog) -> Result<(), LocalReply> {
    let Parent::Service { service, .. } = &conn.parent else {
        return Ok(());
    };
    if service.policies.is_empty() {
        return Ok(());
    }
    let path = parts.uri.path().to_owned();
    let request = attributes(conn, parts, &path, log, None);
    let caller = Caller {
        identity: conn.source.as_ref(),
        ip: conn.client.ip(),
    };
    let policies = service.policies.iter().map(AsRef::as_ref);
    let target = format!("service {}", service.key());
    enforce::request(
        &conn.dp.inputs,
        policies,
        &target,
        caller,
        conn.original,
        &request,
    )
    .map_err(|_| forbidden())
}

/// One target workload's policy for this request, `destination` its address.
fn target_policy(
    conn: &Conn,
    state: &State,
    (target, destination): (&WorkloadInfo, std::net::SocketAddr),
    source: Option<&Identity>,
    parts: &mut Parts,
    log: &RequestLog,
) -> Result<(), LocalReply> {
    let authn = authenticate(conn, state, target, parts, log)?;
    let path = parts.uri.path().to_owned();
    let request = attributes(conn, parts, &path, log, authn.as_ref());
    let caller = Caller {
        identity: source,
        ip: conn.client.ip(),
    };
    let inputs = &conn.dp.inputs;
    if enforce::workload_request(inputs, target, caller, destination, &request).is_err() {
        return Err(forbidden());
    }
    if let Some(a) = authn {
        if let Some(h) = &a.strip {
            parts.headers.remove(h.as_str());
        }
        for (h, v) in &a.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(h.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                parts.headers.insert(n, v);
            }
        }
    }
    Ok(())
}

pub fn check(
    conn: &Conn,
    state: &State,
    chosen: &Chosen,
    parts: &mut Parts,
    log: &mut RequestLog,
) -> Result<(), LocalReply> {
    if let Parent::Gateway { workload, .. } = &conn.parent {
        let at = (workload.as_ref(), conn.original);
        target_policy(conn, state, at, conn.source.as_ref(), parts, log)?;
    }
    service_policy(conn, parts, log)?;
    let Some(w) = state.workloads_by_ip.get(&chosen.first.ip()) else {
        return Ok(());
    };
    log.destination_identity = Some(conn.dp.inputs.identity_of(w).to_string());
    // A mesh destination on another node judges its own L7 policy (its agent
    // terminates the HBONE stream at L7): judging here too would strip the token
    // it needs. Judged here: destinations on this node, plaintext tunnels, and
    // everything a shared waypoint serves (destinations trust waypoints).
    let shared_waypoint =
        conn.dp.inputs.orig_dst.is_none() && matches!(conn.parent, Parent::Service { .. });
    let remote = !conn.at_destination
        && !shared_waypoint
        && !conn.dp.pods.contains(chosen.first.ip())
        && conn.dp.inputs.tunnel == crate::datapath::Tunnel::Hbone
        && w.captured;
    if remote {
        return Ok(());
    }
    // Behind a gateway, the destination sees the gateway's identity.
    let source = match &conn.parent {
        Parent::Gateway { .. } => Some(&conn.pod.identity),
        _ => conn.source.as_ref(),
    };
    target_policy(conn, state, (w, chosen.first), source, parts, log)
}

#[cfg(test)]
mod tests {
    use super::remote_ip;

    #[test]
    fn the_client_address_trusts_only_configured_proxies() {
        let peer: std::net::IpAddr = "192.0.2.9".parse().expect("ip");
        // (X-Forwarded-For values, trusted proxies, client address)
        let cases: [(&[&str], u8, &str); 6] = [
            (&["203.0.113.1"], 0, "192.0.2.9"),
            (&["203.0.113.1"], 1, "203.0.113.1"),
            (&["198.51.100.7, 203.0.113.1"], 2, "198.51.100.7"),
            (&["198.51.100.7", "203.0.113.1"], 1, "203.0.113.1"),
            (&["203.0.113.1"], 2, "192.0.2.9"),
            (&["not-an-address"], 1, "192.0.2.9"),
        ];
        for (xff, trusted, want) in cases {
            let mut h = http::HeaderMap::new();
            for v in xff {
                h.append("x-forwarded-for", v.parse().expect("value"));
            }
            assert_eq!(
                remote_ip(&h, peer, trusted).to_string(),
                want,
                "{xff:?} {trusted}"
            );
        }
    }
}
