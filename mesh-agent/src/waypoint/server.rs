//! The waypoint's HTTP side: hyper terminates HTTP/1.1 and HTTP/2 on a captured
//! connection; each request goes through the phases (`phases`) with a request log
//! and a trace span, and its response body runs the log phase when it ends.
use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{header, HeaderMap};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};

use super::{
    body::Tracked,
    log::{Finish, RequestLog},
    phases::IdleTimeout,
    reply::DownBody,
    trace::TraceContext,
    upstream::BoxError,
};

/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 << 10;
/// A client must send a whole request head within this (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub use super::conn::Conn;
use crate::guard::Reason;

pub async fn serve<I>(io: I, conn: Arc<Conn>) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = match super::detect::first_bytes(io, HEADER_READ_TIMEOUT).await {
        Ok(io) => io,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            conn.dp.inputs.guard.refuse(Reason::HeaderTimeout, || {
                tracing::info!(source = ?conn.source_key(), "HTTP connection closed: no request within {HEADER_READ_TIMEOUT:?}");
            });
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
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

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<DownBody> {
    let start = Instant::now();
    let grpc = is_grpc(req.headers());
    let mut log = RequestLog {
        method: req.method().to_string(),
        authority: authority(&req),
        path: req.uri().path().to_owned(),
        protocol: if grpc { "grpc" } else { "http" },
        ..RequestLog::default()
    };
    let mut trace = TraceContext::from_header(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let otel = conn
        .dp
        .inputs
        .telemetry
        .spans
        .request(&mut trace, log.method.clone());
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
        super::phases::run(&conn, req, &mut log, grpc).await
    };
    let (parts, body) = resp.into_parts();
    let idle = log_idle(&parts);
    let finish = Finish {
        dp: conn.dp.clone(),
        source: conn.source_key(),
        principal: conn.source.clone(),
        client_ip: conn.client.ip(),
        status: parts.status.as_u16(),
        grpc_status: parts
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        log,
        start,
        span,
        otel,
    };
    Response::from_parts(parts, Tracked::new(body, idle, finish).boxed())
}

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
