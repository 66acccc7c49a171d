//! The response body on its way to the client: counts bytes, cuts a stream that
//! stays idle past the route's idle timeout, and logs the request when it ends.
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::{
    server::{DownBody, RequestLog},
    upstream::BoxError,
};
use crate::{datapath::DataPath, telemetry::RequestLabels};

pub struct Finish {
    pub dp: DataPath,
    pub source: String,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub log: RequestLog,
    pub start: Instant,
    pub span: tracing::Span,
}

impl Finish {
    fn emit(self, bytes: u64, trailers_grpc: Option<String>, cut: Option<&'static str>) {
        let mut log = self.log;
        if let Some(flag) = cut {
            log.flags = flag;
        }
        let grpc_status = trailers_grpc.or(self.grpc_status);
        let elapsed = self.start.elapsed();
        let t = &self.dp.inputs.telemetry;
        let labels = RequestLabels {
            reporter: "waypoint",
            source_principal: self.source.clone(),
            destination_service: log.destination_service.clone(),
            destination_principal: log
                .destination_identity
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            request_protocol: log.protocol,
            response_code: self.status,
            grpc_response_status: grpc_status.clone().unwrap_or_default(),
            response_flags: log.flags,
        };
        t.requests.get_or_create(&labels).inc();
        t.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        t.request_bytes
            .get_or_create(&labels)
            .observe(log.request_bytes as f64);
        t.response_bytes
            .get_or_create(&labels)
            .observe(bytes as f64);
        let trace = log.trace.as_ref();
        let line = serde_json::json!({
            "reporter": "waypoint",
            "method": log.method,
            "authority": log.authority,
            "path": log.path,
            "protocol": log.protocol,
            "status": self.status,
            "grpc_status": grpc_status,
            "response_flags": log.flags,
            "route": log.route,
            "destination_service": log.destination_service,
            "upstream": log.upstream.map(|a| a.to_string()),
            "upstream_ms": log.upstream_ms,
            "retries": log.retries,
            "duration_ms": elapsed.as_millis() as u64,
            "bytes_sent": log.request_bytes,
            "bytes_received": bytes,
            "src.identity": self.source,
            "dst.identity": log.destination_identity,
            "trace_id": trace.map(|t| t.trace_id.as_str()),
            "span_id": trace.map(|t| t.span_id.as_str()),
            "parent_span_id": trace.and_then(|t| t.parent_id.as_deref()),
        });
        let _e = self.span.enter();
        tracing::info!(target: "access", "{line}");
    }
}

pub struct Tracked {
    inner: DownBody,
    bytes: u64,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    finish: Option<Finish>,
    grpc_status: Option<String>,
}

impl Tracked {
    pub fn new(inner: DownBody, idle: Option<Duration>, finish: Finish) -> Tracked {
        Tracked {
            inner,
            bytes: 0,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            finish: Some(finish),
            grpc_status: None,
        }
    }

    fn done(&mut self, cut: Option<&'static str>) {
        if let Some(f) = self.finish.take() {
            f.emit(self.bytes, self.grpc_status.take(), cut);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    this.grpc_status = t
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                if let Some((d, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done(Some("UR"));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((_, sleep)) = &mut this.idle {
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.done(Some("SI"));
                        return Poll::Ready(Some(Err("stream idle timeout".into())));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Ended before its last frame: the client went away.
        let flag = if self.inner.is_end_stream() {
            None
        } else {
            Some("DC")
        };
        self.done(flag);
    }
}
