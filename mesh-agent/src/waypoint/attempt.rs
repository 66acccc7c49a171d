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
    conn::Conn,
    log::RequestLog,
    reply::{DownBody, LocalReply, ResponseFlag},
    runtime::Runtime,
    upstream::{self, BoxError, Clients, Side, UpBody},
};
use mesh_infra::backoff::Backoff;
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
            ReqBody::Stream(s) => s
                .take()
                .map(|b| super::body::IdleBody::new(b, super::body::REQUEST_BODY_IDLE).boxed()),
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
            // Hop-by-hop headers went in the normalize phase; an upgrade's two
            // are HTTP/1.1 only.
            let h = req.headers_mut();
            h.remove(header::CONNECTION);
            h.remove(header::UPGRADE);
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
    let runtime = &conn.l7;
    let Ok(place) = runtime.mirrors.clone().try_acquire_owned() else {
        conn.dp.inputs.guard.refuse(crate::guard::Reason::MirrorLimit, || {
            tracing::info!(mirror = %backend.service, limit = super::runtime::MAX_MIRRORS, "mirror not sent: too many in flight");
        });
        return;
    };
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
        conn.l7.clients(&conn.pod),
    );
    let stats = runtime.backends.endpoint(addr);
    let direct = conn.at_destination;
    tokio::spawn(async move {
        let t = upstream::Target {
            pod: &pod,
            dp: &dp,
            addr,
            stats,
            max_connections: None,
            direct,
        };
        let send = async {
            let mut body = clients.send(t, req, h2, false).await?.into_body();
            // Read and drop: a mirror's answer is never kept.
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, BoxError>(())
        };
        match tokio::time::timeout(Duration::from_secs(30), send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(mirror = %addr, "mirror request failed: {e}"),
            Err(_) => tracing::debug!(mirror = %addr, "mirror request timed out"),
        }
        drop(place);
    });
}

fn overflow() -> LocalReply {
    LocalReply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream overflow\n",
        ResponseFlag::UpstreamOverflow,
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
}

/// What one attempt came to.
struct Outcome {
    result: Result<Response<Incoming>, LocalReply>,
    /// Counts against the endpoint (outlier detection).
    failed: bool,
    /// The retry policy allows another attempt.
    retryable: bool,
}

impl Attempts<'_> {
    /// What a failed send means, and whether the route's retry policy retries it.
    fn failure(
        &self,
        e: upstream::Error,
        endpoint: SocketAddr,
        log: &RequestLog,
    ) -> Result<Outcome, LocalReply> {
        match e.side() {
            Side::Local => return Err(overflow()),
            Side::Downstream => {
                tracing::info!(route = %log.route, "request body from the client failed: {e}");
                return Err(LocalReply::new(
                    StatusCode::BAD_REQUEST,
                    "malformed request body\n",
                    ResponseFlag::DownstreamProtocolError,
                ));
            }
            Side::Upstream => {}
        }
        tracing::info!(route = %log.route, upstream = %endpoint, "{e}");
        let (flag, retryable) = match e.retry() {
            upstream::Retry::OnConnectFailure => (
                ResponseFlag::UpstreamConnectFailure,
                self.retry.is_some_and(|r| r.on_connect_failure),
            ),
            upstream::Retry::OnReset => (
                ResponseFlag::UpstreamReset,
                self.retry.is_some_and(|r| r.on_reset),
            ),
            upstream::Retry::Never => (ResponseFlag::UpstreamConnectFailure, false),
        };
        let reply = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or reset\n",
            flag,
        );
        Ok(Outcome {
            result: Err(reply),
            failed: true,
            retryable,
        })
    }

    /// One attempt on `endpoint`.
    async fn attempt(
        &self,
        endpoint: SocketAddr,
        body: UpBody,
        log: &mut RequestLog,
    ) -> Result<Outcome, LocalReply> {
        let runtime: &Runtime = &self.conn.l7;
        let _admitted = runtime
            .backends
            .admit(self.stats, endpoint, self.policy)
            .map_err(|_| overflow())?;
        let pending = runtime
            .backends
            .pending(self.stats, endpoint, self.policy)
            .map_err(|_| overflow())?;
        log.upstream = Some(endpoint);
        let t = upstream::Target {
            pod: &self.conn.pod,
            dp: &self.conn.dp,
            addr: endpoint,
            stats: runtime.backends.endpoint(endpoint),
            max_connections: self.policy.max_connections,
            direct: self.conn.at_destination,
        };
        let sent = Instant::now();
        let req = self.head.build(self.h2 && !self.upgrade, body);
        let send = self.clients.send(t, req, self.h2, self.upgrade);
        let result = match self.rule.backend_timeout {
            Some(d) => tokio::time::timeout(d, send).await.map_err(|_| ()),
            None => Ok(send.await),
        };
        drop(pending);
        log.upstream_ms = Some(sent.elapsed().as_millis() as u64);
        let outcome = match result {
            Ok(Ok(resp)) => {
                let s = resp.status().as_u16();
                let retryable = self
                    .retry
                    .is_some_and(|r| r.codes.contains(&s) || (r.on_5xx && s >= 500));
                Outcome {
                    result: Ok(resp),
                    failed: s >= 500,
                    retryable,
                }
            }
            Ok(Err(e)) => self.failure(e, endpoint, log)?,
            Err(()) => Outcome {
                result: Err(LocalReply::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout\n",
                    ResponseFlag::UpstreamTimeout,
                )),
                failed: true,
                retryable: self.retry.is_some_and(|r| r.on_reset),
            },
        };
        runtime.backends.record(
            endpoint,
            outcome.failed,
            self.eps,
            self.policy,
            Instant::now(),
        );
        Ok(outcome)
    }

    pub(super) async fn run(
        self,
        body: &mut ReqBody,
        log: &mut RequestLog,
    ) -> Result<Response<DownBody>, LocalReply> {
        let runtime: &Runtime = &self.conn.l7;
        let mut endpoint = self.first;
        let mut backoff = self
            .retry
            .map(|r| Backoff::retries(r.backoff, r.max_backoff));
        let mut _budget = None;
        loop {
            let Some(req_body) = body.take() else {
                return Err(LocalReply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream failed\n",
                    ResponseFlag::UpstreamRetryLimitExceeded,
                ));
            };
            let outcome = self.attempt(endpoint, req_body, log).await?;
            let more = self
                .retry
                .filter(|r| outcome.retryable && log.retries < r.attempts && body.replayable());
            let budget = more.and_then(|r| {
                runtime
                    .backends
                    .retry_budget(self.stats, endpoint, r.budget_percent, r.min_retries)
            });
            if let (Some(_), Some(b), Some(wait)) = (more, budget, backoff.as_mut()) {
                log.retries += 1;
                _budget = Some(b);
                // The failed response is dropped unread; its connection closes
                // rather than carry a half-read body.
                drop(outcome);
                wait.wait().await;
                let now = Instant::now();
                if let Some(next) =
                    runtime
                        .backends
                        .pick(self.stats, self.eps, self.policy, Some(endpoint), now)
                {
                    endpoint = next;
                }
                continue;
            }
            // A retry was wanted but the attempts or the budget are spent.
            if outcome.retryable && self.retry.is_some() {
                log.flags = ResponseFlag::UpstreamRetryLimitExceeded;
            }
            return outcome
                .result
                .map(|resp| resp.map(|b| b.map_err(BoxError::from).boxed()));
        }
    }
}
