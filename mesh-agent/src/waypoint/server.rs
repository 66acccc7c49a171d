//! The waypoint's HTTP side: hyper terminates HTTP/1.1 and HTTP/2 on a captured
//! connection; each request is routed, filtered, checked and sent upstream.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};

use super::{
    attempt::{self, Attempts, Head, ReqBody},
    body::{Finish, Tracked},
    filters,
    router::{self, RequestView},
    trace::TraceContext,
    upstream::BoxError,
    Parent,
};
use crate::{datapath::DataPath, local::Pod};
use mesh_model::{
    identity::Identity,
    l7::table::{Backend, Filter, ParentKey, PathCond, RouteRule},
    state::State,
};

/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 << 10;
/// A client must send a whole request head within this (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies up to this size are kept for retries and mirrors.
const MAX_REPLAY_BODY: usize = 64 << 10;

pub type DownBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// One connection served by the waypoint.
pub struct Conn {
    /// Whose identity and network namespace upstream connections use.
    pub pod: Arc<Pod>,
    pub dp: DataPath,
    pub parent: Parent,
    /// Who is calling: the pod itself (node waypoint), the HBONE peer (shared
    /// waypoint) or nobody known (a client outside the mesh at the edge).
    pub source: Option<Identity>,
    pub client: SocketAddr,
    pub original: SocketAddr,
}

impl Conn {
    /// Rate-limit and log key of the caller: its identity, else its address.
    pub(super) fn source_key(&self) -> String {
        match &self.source {
            Some(id) => id.to_string(),
            None => self.client.ip().to_string(),
        }
    }
}

pub async fn serve<I>(io: I, conn: Arc<Conn>) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(100)
        .max_local_error_reset_streams(1024)
        .keep_alive_interval(Duration::from_secs(30))
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn full(b: impl Into<Bytes>) -> DownBody {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// gRPC status for a locally generated HTTP status (as Envoy maps them).
fn grpc_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// A response the waypoint makes itself; gRPC callers get trailers-only form.
pub(super) fn local(
    status: StatusCode,
    body: &str,
    grpc: bool,
    grpc_code: Option<u32>,
) -> Response<DownBody> {
    if grpc {
        let code = grpc_code.unwrap_or_else(|| grpc_status(status));
        let mut r = Response::new(full(Bytes::new()));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(code));
        if let Ok(v) = HeaderValue::from_str(body.trim()) {
            h.insert("grpc-message", v);
        }
        return r;
    }
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// What one request did, for the access log and metrics.
#[derive(Debug, Default, Clone)]
pub struct RequestLog {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub route: String,
    pub destination_service: String,
    pub destination_identity: Option<String>,
    pub upstream: Option<SocketAddr>,
    pub retries: u32,
    pub flags: &'static str,
    pub request_bytes: u64,
    pub trace: Option<TraceContext>,
    pub upstream_ms: Option<u64>,
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<DownBody> {
    let start = Instant::now();
    let grpc = is_grpc(req.headers());
    let mut log = RequestLog {
        method: req.method().to_string(),
        authority: authority(&req),
        path: req.uri().path().to_owned(),
        protocol: if grpc { "grpc" } else { "http" },
        flags: "-",
        ..RequestLog::default()
    };
    let trace = TraceContext::from_header(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!(
        "waypoint",
        trace_id = %trace.trace_id,
        span_id = %trace.span_id,
        parent_id = trace.parent_id.as_deref().unwrap_or(""),
        method = %log.method,
        path = %log.path,
    );
    log.trace = Some(trace);
    let resp = {
        let _e = span.enter();
        tracing::debug!("request");
        drop(_e);
        route(&conn, req, &mut log, grpc).await
    };
    let (parts, body) = resp.into_parts();
    let idle = log_idle(&parts);
    let finish = Finish {
        dp: conn.dp.clone(),
        source: conn.source_key(),
        status: parts.status.as_u16(),
        grpc_status: parts
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        log,
        start,
        span,
    };
    Response::from_parts(parts, Tracked::new(body, idle, finish).boxed())
}

/// The idle timeout a route set travels in the response extensions.
#[derive(Clone, Copy)]
struct IdleTimeout(Duration);

fn log_idle(parts: &http::response::Parts) -> Option<Duration> {
    parts.extensions.get::<IdleTimeout>().map(|i| i.0)
}

fn authority(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Endpoints of a backend Service port, in the original address's family first.
fn endpoints(state: &State, b: &Backend, v4: bool) -> Option<Vec<SocketAddr>> {
    let svc = state.services_by_key.get(&b.service)?;
    let port = svc.ports.iter().find(|p| p.port == b.port)?;
    let pick = |want_v4: bool| -> Vec<SocketAddr> {
        port.endpoints
            .iter()
            .filter_map(|w| if want_v4 { w.ipv4() } else { w.ipv6() })
            .map(|ip| SocketAddr::new(ip, port.target_port))
            .collect()
    };
    let first = pick(v4);
    Some(if first.is_empty() { pick(!v4) } else { first })
}

fn weighted(rule: &RouteRule) -> Option<&Backend> {
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for b in &rule.backends {
        if n < u64::from(b.weight) {
            return Some(&b.backend);
        }
        n -= u64::from(b.weight);
    }
    None
}

async fn route(
    conn: &Conn,
    req: Request<Incoming>,
    log: &mut RequestLog,
    grpc: bool,
) -> Response<DownBody> {
    let state = conn.dp.inputs.state.load();
    let table = state.l7.clone();
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let port = conn.original.port();

    // 1. The rule.
    let (rule, matched): (Arc<RouteRule>, Option<PathCond>) = match &conn.parent {
        Parent::Service {
            service,
            port: sport,
        } => {
            let key = service.key();
            log.destination_service = key.clone();
            let view = RequestView {
                method: parts.method.as_str(),
                path: &path,
                query: query.as_deref(),
                headers: &parts.headers,
                grpc,
                port: *sport,
            };
            match table.parents.get(&ParentKey::Service(key.clone())) {
                Some(p) if p.entries.iter().any(|e| e.port.is_none_or(|x| x == *sport)) => {
                    match router::select(&p.entries, &view) {
                        Some(e) => (e.rule.clone(), e.m.path.clone()),
                        None => {
                            log.flags = "NR";
                            return local(StatusCode::NOT_FOUND, "no route matches\n", grpc, None);
                        }
                    }
                }
                _ => (Arc::new(table.default_rule(&key, *sport)), None),
            }
        }
        Parent::Workload { workload } => {
            log.destination_service = workload.key();
            (Arc::new(RouteRule::direct(workload.key())), None)
        }
        Parent::Gateway { key, .. } => {
            log.destination_service = format!("Gateway {key}");
            let view = RequestView {
                method: parts.method.as_str(),
                path: &path,
                query: query.as_deref(),
                headers: &parts.headers,
                grpc,
                port,
            };
            match table
                .parents
                .get(&ParentKey::Gateway(key.clone()))
                .and_then(|p| router::select(&p.entries, &view))
            {
                Some(e) => (e.rule.clone(), e.m.path.clone()),
                None => {
                    log.flags = "NR";
                    return local(StatusCode::NOT_FOUND, "no route matches\n", grpc, None);
                }
            }
        }
    };
    log.route = match &rule.rule {
        Some(r) => format!("{}/{r}", rule.route),
        None => rule.route.clone(),
    };

    // The route's request timeout covers everything from here on.
    let deadline = rule
        .request_timeout
        .map(|d| tokio::time::Instant::now() + d);

    // 2. Filters that answer, or change the request.
    let mut response_mods = Vec::new();
    let mut mirrors = Vec::new();
    for f in &rule.filters {
        match f {
            Filter::Direct(d) => {
                log.flags = "DR";
                let mut r = local(
                    StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK),
                    &d.body,
                    false,
                    None,
                );
                *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
                let mut m = mesh_model::model::HeaderModifier::default();
                m.set.clone_from(&d.headers);
                filters::modify_headers(r.headers_mut(), &m);
                return r;
            }
            Filter::Redirect(rd) => {
                let (status, location) =
                    filters::redirect(&parts.uri, &log.authority, rd, matched.as_ref());
                let mut r = local(status, "", false, None);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return r;
            }
            Filter::Invalid(why) => {
                tracing::warn!(route = %log.route, "{why}; answering 500");
                log.flags = "NC";
                return local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "route misconfigured\n",
                    grpc,
                    None,
                );
            }
            Filter::RequestHeaders(m) => filters::modify_headers(&mut parts.headers, m),
            Filter::Rewrite(r) => {
                if let Some(uri) =
                    filters::rewrite(&parts.uri, &mut parts.headers, r, matched.as_ref())
                {
                    parts.uri = uri;
                }
            }
            Filter::ResponseHeaders(m) => response_mods.push(m.clone()),
            Filter::Mirror { backend, percent } => {
                if fastrand::u32(..100) < *percent {
                    mirrors.push(backend.clone());
                }
            }
        }
    }

    // 3. Local rate limit, then injected faults.
    let source = conn.source_key();
    if let Some(rl) = &rule.rate_limit {
        if !conn.dp.l7.buckets.take(rl, &source, Instant::now()) {
            log.flags = "RL";
            let mut r = local(
                StatusCode::from_u16(rl.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                &rl.body,
                grpc,
                None,
            );
            if !grpc {
                *r.status_mut() =
                    StatusCode::from_u16(rl.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            }
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(super::ratelimit::retry_after(rl)),
            );
            for (n, v) in &rl.headers {
                if let (Ok(n), Ok(v)) = (
                    header::HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    r.headers_mut().insert(n, v);
                }
            }
            return r;
        }
    }
    if let Some(fault) = &rule.fault {
        if let Some((delay, pct)) = fault.delay {
            if fastrand::f64() * 100.0 < pct {
                // The request timeout counts from the request, delay included.
                match deadline {
                    Some(end) if tokio::time::Instant::now() + delay >= end => {
                        tokio::time::sleep_until(end).await;
                        log.flags = "UT";
                        return local(
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream request timeout\n",
                            grpc,
                            None,
                        );
                    }
                    _ => tokio::time::sleep(delay).await,
                }
            }
        }
        if let Some((status, grpc_code, pct)) = fault.abort {
            if fastrand::f64() * 100.0 < pct {
                log.flags = "FI";
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return local(status, "fault filter abort\n", grpc, grpc_code);
            }
        }
    }

    // 4. The backend and its endpoints.
    let v4 = conn.original.is_ipv4();
    let (backend, eps) = match &conn.parent {
        Parent::Workload { .. } => (
            Backend {
                service: log.destination_service.clone(),
                port,
            },
            vec![conn.original],
        ),
        Parent::Service { .. } | Parent::Gateway { .. } => {
            let Some(b) = weighted(&rule) else {
                log.flags = "NC";
                return local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "route has no backend\n",
                    grpc,
                    None,
                );
            };
            match endpoints(&state, b, v4) {
                None => {
                    tracing::warn!(route = %log.route, backend = %b.service, port = b.port, "backend Service or port not found; answering 500");
                    log.flags = "NC";
                    return local(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "backend not found\n",
                        grpc,
                        None,
                    );
                }
                Some(eps) => (b.clone(), eps),
            }
        }
    };
    log.destination_service = backend.service.clone();
    if eps.is_empty() {
        log.flags = "UH";
        return local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream\n",
            grpc,
            None,
        );
    }
    let policy = table
        .backend_policies
        .get(&backend.service)
        .cloned()
        .unwrap_or_default();
    let runtime = &conn.dp.l7;
    let stats = runtime.backends.backend(&backend.service);
    let Some(first) = runtime
        .backends
        .pick(&stats, &eps, &policy, None, Instant::now())
    else {
        log.flags = "UH";
        return local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream\n",
            grpc,
            None,
        );
    };

    // 5. Authentication and authorization: at the edge for the gateway itself,
    // then for the destination workload.
    if let Parent::Gateway { workload, .. } = &conn.parent {
        if let Err(r) = super::policy::check(
            conn,
            &state,
            workload,
            conn.source.as_ref(),
            &mut parts,
            log,
            grpc,
        ) {
            return *r;
        }
    }
    if let Some(w) = state.workloads_by_ip.get(&first.ip()) {
        log.destination_identity = Some(conn.dp.inputs.identity_of(w).to_string());
        // Behind a gateway, the destination sees the gateway's identity.
        let source = match &conn.parent {
            Parent::Gateway { .. } => Some(&conn.pod.identity),
            _ => conn.source.as_ref(),
        };
        if let Err(r) = super::policy::check(conn, &state, w, source, &mut parts, log, grpc) {
            return *r;
        }
    }

    // 6. The body: kept when a retry or a mirror may need it again.
    let upgrade = parts.version == Version::HTTP_11 && parts.headers.contains_key(header::UPGRADE);
    let retry = rule
        .retry
        .as_ref()
        .filter(|r| !upgrade && (idempotent(&parts.method) || r.allow_non_idempotent));
    let wants_copy = retry.is_some() || !mirrors.is_empty();
    let small = hyper::body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= MAX_REPLAY_BODY as u64);
    let mut body = if hyper::body::Body::is_end_stream(&body) {
        ReqBody::Replay(Bytes::new())
    } else if wants_copy && small {
        match Limited::new(body, MAX_REPLAY_BODY).collect().await {
            Ok(c) => ReqBody::Replay(c.to_bytes()),
            Err(e) => {
                log.flags = "DC";
                return local(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body: {e}\n"),
                    grpc,
                    None,
                );
            }
        }
    } else {
        ReqBody::Stream(Some(body))
    };
    if let ReqBody::Replay(b) = &body {
        log.request_bytes = b.len() as u64;
    }

    // 7. The upstream request head.
    let h2 = !upgrade && (parts.version == Version::HTTP_2 || grpc || wants_h2(&state, &backend));
    let trace = log
        .trace
        .as_ref()
        .map(TraceContext::header)
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&trace) {
        parts.headers.insert("traceparent", v);
    }
    let on_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let head = Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        authority: log.authority.clone(),
    };
    let clients = conn.dp.l7.clients(&conn.pod);

    // Mirrors: fire and forget, with the same head and a kept body.
    if let ReqBody::Replay(b) = &body {
        for m in mirrors {
            if let Some(meps) = endpoints(&state, &m, v4) {
                attempt::mirror(conn, &m, &meps, head.build(h2, attempt::replay(b)), h2);
            }
        }
    }

    // 8. Attempts, within the request timeout.
    let attempts = Attempts {
        conn,
        rule: &rule,
        retry,
        head: &head,
        h2,
        upgrade,
        clients: &clients,
        stats: &stats,
        policy: &policy,
        eps: &eps,
        first,
        grpc,
    }
    .run(&mut body, log);
    let mut resp = match deadline {
        Some(end) => match tokio::time::timeout_at(end, attempts).await {
            Ok(r) => r,
            Err(_) => {
                log.flags = "UT";
                local(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout\n",
                    grpc,
                    None,
                )
            }
        },
        None => attempts.await,
    };
    if let Some(d) = rule.idle_timeout {
        resp.extensions_mut().insert(IdleTimeout(d));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = on_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(down, up) {
                    Ok((d, u)) => {
                        let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
        }
    }
    for m in &response_mods {
        filters::modify_headers(resp.headers_mut(), m);
    }
    resp
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
