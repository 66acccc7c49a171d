//! Sending a request upstream: the request head rebuilt per attempt, the body kept
//! for retries when small, retries with budget and backoff, circuit breaking and
//! outlier accounting; and fire-and-forget mirrors.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{
    backend::BackendStats,
    server::{local, Conn, DownBody, RequestLog},
    upstream::{self, BoxError, Clients, UpBody},
};
use mesh_model::l7::table::{Backend, BackendPolicy, Retry, RouteRule};

/// A request body: kept (replayable) or streamed once.
pub(super) enum ReqBody {
    Replay(Bytes),
    Stream(Option<Incoming>),
}

impl ReqBody {
    pub(super) fn take(&mut self) -> Option<UpBody> {
        match self {
            ReqBody::Replay(b) => Some(
                Full::new(b.clone())
                    .map_err(|e: Infallible| match e {})
                    .boxed(),
            ),
            ReqBody::Stream(s) => s.take().map(|b| b.map_err(BoxError::from).boxed()),
        }
    }
    pub(super) fn replayable(&self) -> bool {
        matches!(self, ReqBody::Replay(_))
    }
}

/// A kept body as an upstream body.
pub(super) fn replay(b: &Bytes) -> UpBody {
    Full::new(b.clone())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// The upstream request head, rebuilt per attempt.
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    pub(super) authority: String,
}

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

impl Head {
    pub(super) fn build(&self, h2: bool, body: UpBody) -> Request<UpBody> {
        let pq = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.headers.clone();
        if h2 {
            *req.version_mut() = Version::HTTP_2;
            let host = self
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&self.authority);
            *req.uri_mut() = format!("http://{host}{pq}")
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"));
            let h = req.headers_mut();
            for n in HOP_BY_HOP {
                if n == "te" && h.get("te").is_some_and(|v| v == "trailers") {
                    continue;
                }
                h.remove(n);
            }
            h.remove(header::HOST);
        } else {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
            if !req.headers().contains_key(header::HOST) {
                if let Ok(v) = HeaderValue::from_str(&self.authority) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
        }
        req
    }
}

/// Sends a copy of a request to `backend` and forgets it: never slows the request.
pub(super) fn mirror(
    conn: &Conn,
    backend: &Backend,
    endpoints: &[SocketAddr],
    req: Request<UpBody>,
    h2: bool,
) {
    let runtime = &conn.dp.l7;
    let stats = runtime.backends.backend(&backend.service);
    let Some(addr) = runtime.backends.pick(
        &stats,
        endpoints,
        &BackendPolicy::default(),
        None,
        Instant::now(),
    ) else {
        return;
    };
    let (pod, dp, clients) = (
        conn.pod.clone(),
        conn.dp.clone(),
        conn.dp.l7.clients(&conn.pod),
    );
    tokio::spawn(async move {
        let t = upstream::Target {
            pod: &pod,
            dp: &dp,
            addr,
            stats: dp.l7.backends.endpoint(addr),
            max_connections: None,
        };
        match tokio::time::timeout(Duration::from_secs(30), clients.send(t, req, h2, false)).await {
            Ok(Ok(resp)) => {
                let _ = resp.into_body().collect().await;
            }
            Ok(Err(e)) => tracing::debug!(mirror = %addr, "mirror request failed: {e}"),
            Err(_) => tracing::debug!(mirror = %addr, "mirror request timed out"),
        }
    });
}

/// The circuit breaker refused the request.
fn overflow(grpc: bool) -> Response<DownBody> {
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream overflow\n",
        grpc,
        None,
    )
}

/// One request's attempts against one backend.
pub(super) struct Attempts<'a> {
    pub conn: &'a Conn,
    pub rule: &'a RouteRule,
    pub retry: Option<&'a Retry>,
    pub head: &'a Head,
    pub h2: bool,
    pub upgrade: bool,
    pub clients: &'a Arc<Clients>,
    pub stats: &'a Arc<BackendStats>,
    pub policy: &'a BackendPolicy,
    pub eps: &'a [SocketAddr],
    pub first: SocketAddr,
    pub grpc: bool,
}

impl Attempts<'_> {
    pub(super) async fn run(self, body: &mut ReqBody, log: &mut RequestLog) -> Response<DownBody> {
        let Attempts {
            conn,
            rule,
            retry,
            head,
            h2,
            upgrade,
            clients,
            stats,
            policy,
            eps,
            first,
            grpc,
        } = self;
        let runtime: &super::Runtime = &conn.dp.l7;
        let mut endpoint = first;
        let mut tries = 0u32;
        let mut _budget = None;
        loop {
            let Some(req_body) = body.take() else {
                log.flags = "URX";
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream failed\n",
                    grpc,
                    None,
                );
            };
            let admitted = match runtime.backends.admit(stats, endpoint, policy) {
                Ok(h) => h,
                Err(_) => {
                    log.flags = "UO";
                    return overflow(grpc);
                }
            };
            let pending = match runtime.backends.pending(stats, endpoint, policy) {
                Ok(p) => p,
                Err(_) => {
                    log.flags = "UO";
                    return overflow(grpc);
                }
            };
            log.upstream = Some(endpoint);
            let t = upstream::Target {
                pod: &conn.pod,
                dp: &conn.dp,
                addr: endpoint,
                stats: runtime.backends.endpoint(endpoint),
                max_connections: policy.max_connections,
            };
            let sent = Instant::now();
            let send = clients.send(t, head.build(h2 && !upgrade, req_body), h2, upgrade);
            let result = match rule.backend_timeout {
                Some(d) => tokio::time::timeout(d, send).await.map_err(|_| ()),
                None => Ok(send.await),
            };
            drop(pending);
            log.upstream_ms = Some(sent.elapsed().as_millis() as u64);
            // What happened, and whether a retry may help.
            let (outcome, failed, retryable) = match result {
                Ok(Ok(resp)) => {
                    let s = resp.status().as_u16();
                    let r = retry.is_some_and(|r| r.codes.contains(&s) || (r.on_5xx && s >= 500));
                    (Ok(resp), s >= 500, r)
                }
                Ok(Err(upstream::Error::Overflow(_))) => {
                    log.flags = "UO";
                    return overflow(grpc);
                }
                Ok(Err(e)) if e.downstream() => {
                    tracing::info!(route = %log.route, "request body from the client failed: {e}");
                    log.flags = "DPE";
                    return local(
                        StatusCode::BAD_REQUEST,
                        "malformed request body\n",
                        grpc,
                        None,
                    );
                }
                Ok(Err(e)) => {
                    let before = e.before_request();
                    tracing::info!(route = %log.route, upstream = %endpoint, "{e}");
                    let r = retry.is_some_and(|r| {
                        if before {
                            r.on_connect_failure
                        } else {
                            r.on_reset
                        }
                    });
                    let flags = if before { "UF" } else { "UR" };
                    (
                        Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            flags,
                            "upstream connect error or reset\n",
                        )),
                        true,
                        r,
                    )
                }
                Err(()) => {
                    let r = retry.is_some_and(|r| r.on_reset);
                    (
                        Err((
                            StatusCode::GATEWAY_TIMEOUT,
                            "UT",
                            "upstream request timeout\n",
                        )),
                        true,
                        r,
                    )
                }
            };
            runtime
                .backends
                .record(endpoint, failed, eps, policy, Instant::now());
            drop(admitted);
            let more = retry.filter(|r| retryable && tries < r.attempts && body.replayable());
            let budget = more.and_then(|r| {
                runtime
                    .backends
                    .retry_budget(stats, endpoint, r.budget_percent, r.min_retries)
            });
            if let (Some(r), Some(b)) = (more, budget) {
                tries += 1;
                log.retries = tries;
                _budget = Some(b);
                // The failed response is dropped unread; its connection closes
                // rather than carry a half-read body.
                drop(outcome);
                tokio::time::sleep(super::backend::backoff(tries, r.backoff, r.max_backoff)).await;
                if let Some(next) =
                    runtime
                        .backends
                        .pick(stats, eps, policy, Some(endpoint), Instant::now())
                {
                    endpoint = next;
                }
                continue;
            }
            // A retry was wanted but the attempts or the budget are spent.
            if retryable && retry.is_some() {
                log.flags = "URX";
            }
            return match outcome {
                Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed()),
                Err((status, flags, body)) => {
                    if log.flags == "-" {
                        log.flags = flags;
                    }
                    local(status, body, grpc, None)
                }
            };
        }
    }
}
