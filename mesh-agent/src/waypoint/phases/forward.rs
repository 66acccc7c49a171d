//! Forward: the request body (kept, up to 64 KiB, when a retry or a mirror may need
//! it again), the upstream head (HTTP/2 when the request or the port's appProtocol
//! says so; `traceparent` continued), mirrors (fire and forget), then the attempts
//! within the route's request timeout (`UT` when it passes).
use http::{header, request::Parts, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use mesh_model::{
    l7::table::{Backend, RouteRule},
    state::State,
};

use super::{
    choose::{self, Chosen},
    route::Routed,
};
use crate::waypoint::{
    attempt::{self, Attempts, Head, ReqBody},
    conn::Conn,
    log::RequestLog,
    reply::{DownBody, LocalReply, ResponseFlag},
    trace::TraceContext,
};

/// Request bodies up to this size are kept for retries and mirrors.
const MAX_REPLAY_BODY: usize = 64 << 10;

/// The request as the earlier phases left it.
pub struct Request {
    pub parts: Parts,
    pub body: Incoming,
    pub grpc: bool,
    pub deadline: Option<tokio::time::Instant>,
}

/// The upstream's response, and the client's side of an upgrade (WebSocket).
pub struct Sent {
    pub response: hyper::Response<DownBody>,
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// HTTP/2 upstream for ports whose appProtocol says so.
fn wants_h2(state: &State, b: &Backend) -> bool {
    state
        .services_by_key
        .get(&b.service)
        .and_then(|s| s.ports.iter().find(|p| p.port == b.port))
        .and_then(|p| p.app_protocol.as_deref())
        .is_some_and(|a| matches!(a, "http2" | "grpc" | "kubernetes.io/h2c" | "h2c"))
}

/// The body, kept when a retry or a mirror may need it again and it is small.
async fn body(body: Incoming, keep: bool, log: &mut RequestLog) -> Result<ReqBody, LocalReply> {
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(ReqBody::Replay(Bytes::new()));
    }
    let small = hyper::body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= MAX_REPLAY_BODY as u64);
    if !(keep && small) {
        return Ok(ReqBody::Stream(Some(body)));
    }
    let body = crate::waypoint::body::IdleBody::new(body, crate::waypoint::body::REQUEST_BODY_IDLE);
    match Limited::new(body, MAX_REPLAY_BODY).collect().await {
        Ok(c) => {
            let b = c.to_bytes();
            log.request_bytes = b.len() as u64;
            Ok(ReqBody::Replay(b))
        }
        Err(e) => Err(LocalReply::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}\n"),
            ResponseFlag::DownstreamConnectionTermination,
        )),
    }
}

fn mirror(conn: &Conn, state: &State, mirrors: Vec<Backend>, head: &Head, h2: bool, b: &Bytes) {
    for m in mirrors {
        if let Some(eps) = choose::endpoints(state, &m, conn.original.is_ipv4()) {
            attempt::mirror(conn, &m, &eps, head.build(h2, attempt::replay(b)), h2);
        }
    }
}

pub async fn send(
    conn: &Conn,
    state: &State,
    routed: &Routed,
    chosen: &Chosen,
    mirrors: Vec<Backend>,
    req: Request,
    log: &mut RequestLog,
) -> Result<Sent, LocalReply> {
    let rule: &RouteRule = &routed.rule;
    let mut parts = req.parts;
    let upgrade = parts.version == Version::HTTP_11 && parts.headers.contains_key(header::UPGRADE);
    let retry = rule
        .retry
        .as_ref()
        .filter(|r| !upgrade && (idempotent(&parts.method) || r.allow_non_idempotent));
    let mut body = body(req.body, retry.is_some() || !mirrors.is_empty(), log).await?;
    let h2 = !upgrade
        && (parts.version == Version::HTTP_2 || req.grpc || wants_h2(state, &chosen.backend));
    let trace = log
        .trace
        .as_ref()
        .map(TraceContext::header)
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&trace) {
        parts.headers.insert("traceparent", v);
    }
    let on_upgrade = upgrade
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let head = Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        authority: log.authority.clone(),
    };
    if let ReqBody::Replay(b) = &body {
        mirror(conn, state, mirrors, &head, h2, b);
    }
    let clients = conn.l7.clients(&conn.pod);
    let attempts = Box::pin(
        Attempts {
            conn,
            rule,
            retry,
            head: &head,
            h2,
            upgrade,
            clients: &clients,
            stats: &chosen.stats,
            policy: &chosen.policy,
            eps: &chosen.endpoints,
            first: chosen.first,
        }
        .run(&mut body, log),
    );
    let response = match req.deadline {
        Some(end) => tokio::time::timeout_at(end, attempts)
            .await
            .unwrap_or_else(|_| {
                Err(LocalReply::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout\n",
                    ResponseFlag::UpstreamTimeout,
                ))
            })?,
        None => attempts.await?,
    };
    Ok(Sent {
        response,
        on_upgrade,
    })
}
