//! One request through the waypoint, as named phases (pingora's model), each in its
//! own file and returning `Result<_, LocalReply>`:
//! `normalize` (one canonical path and host for everything after), `route` (which rule), `filter` (filters that answer or change the request),
//! `admit` (rate limit, injected faults), `choose` (backend and endpoint),
//! `authorize` (JWT and AuthorizationPolicy), `forward` (body, upstream head,
//! mirrors, attempts), `respond` (response filters, upgrades); the log phase runs
//! when the response body ends (`log`).
use hyper::{body::Incoming, Request, Response};

use super::{
    conn::Conn,
    log::RequestLog,
    reply::{DownBody, LocalReply},
};

mod admit;
mod authorize;
mod choose;
mod filter;
mod forward;
pub mod normalize;
pub mod respond;

pub use respond::IdleTimeout;
pub(crate) mod route;

/// Runs the phases; a phase that answers ends the request with its reply.
pub async fn run(
    conn: &Conn,
    req: Request<Incoming>,
    log: &mut RequestLog,
    grpc: bool,
) -> Response<DownBody> {
    // Boxed: the phases' state is large and the data path's threads have small stacks.
    match Box::pin(phases(conn, req, log, grpc)).await {
        Ok(resp) => resp,
        Err(reply) => {
            if log.flags == Default::default() {
                log.flags = reply.flag;
            }
            reply.into_response(grpc)
        }
    }
}

async fn phases(
    conn: &Conn,
    req: Request<Incoming>,
    log: &mut RequestLog,
    grpc: bool,
) -> Result<Response<DownBody>, LocalReply> {
    let state = conn.dp.inputs.state.load();
    let (mut parts, body) = req.into_parts();
    if let Some(upgrade) = normalize::apply(&mut parts, log)? {
        let guard = &conn.dp.inputs.guard;
        guard.refuse(crate::guard::Reason::UpgradeNotAllowed, || {
            tracing::info!(%upgrade, path = %log.path, "upgrade not allowed: forwarded as an ordinary request");
        });
    }
    let routed = route::select(conn, &state, &parts, grpc, log)?;
    // The route's request timeout covers everything from here on.
    let deadline = routed
        .rule
        .request_timeout
        .map(|d| tokio::time::Instant::now() + d);
    let mut filtered = filter::apply(&routed, &mut parts, log)?;
    admit::check(conn, &routed.rule, deadline).await?;
    let chosen = choose::backend(conn, &state, &routed.rule, log)?;
    filter::backend(&routed, chosen.weighted, &mut parts, log, &mut filtered)?;
    authorize::check(conn, &state, &chosen, &mut parts, log)?;
    let request = forward::Request {
        parts,
        body,
        grpc,
        deadline,
    };
    let sent = Box::pin(forward::send(
        conn,
        &state,
        &routed,
        &chosen,
        filtered.mirrors,
        request,
        log,
    ))
    .await?;
    Ok(respond::finish(
        sent,
        &routed.rule,
        &filtered.response_headers,
    ))
}
