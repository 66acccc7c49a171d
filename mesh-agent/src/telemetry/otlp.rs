//! OTLP trace export (opentelemetry-otlp over gRPC): one server span per request
//! at the waypoint, continuing the caller's W3C trace and sampled as Istio does
//! (the caller's decision when it sent one, else `--trace-sampling` percent of
//! new traces). Off unless `--otlp-endpoint` is given.
use std::{sync::Arc, time::Duration};

use opentelemetry::{
    trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    },
    Context, KeyValue,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    trace::{BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter},
    Resource,
};

use crate::waypoint::trace::TraceContext;

/// Spans queued for export at most; beyond it new spans are dropped (counted by
/// the SDK's own log), never the request.
const MAX_QUEUE: usize = 4096;
/// How often queued spans are sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export call's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--otlp-endpoint {endpoint}: {reason} (expected http://host:port of an OTLP gRPC collector)")]
    Endpoint { endpoint: String, reason: String },
    #[error("--trace-sampling {0}: a percentage from 0 to 100")]
    Sampling(f64),
}

/// Where spans go and how many new traces are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// An OTLP gRPC collector, `http://host:port`.
    pub endpoint: String,
    /// Percent of new traces sampled (a caller's decision is kept).
    pub sampling_percent: f64,
    /// Resource attributes: who reports (service.name, k8s.node.name, ...).
    pub resource: Vec<(&'static str, String)>,
}

impl Export {
    fn check(&self) -> Result<(), Error> {
        if !(0.0..=100.0).contains(&self.sampling_percent) {
            return Err(Error::Sampling(self.sampling_percent));
        }
        let uri: Result<http::Uri, _> = self.endpoint.parse();
        let reason = match uri {
            Err(e) => e.to_string(),
            Ok(u) if u.scheme_str() != Some("http") => "not an http:// address".into(),
            Ok(u) if u.authority().is_none() => "no host:port".into(),
            Ok(_) => return Ok(()),
        };
        Err(Error::Endpoint {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }
}

/// The span source of an agent or waypoint: off, or a tracer exporting over OTLP.
#[derive(Clone, Default)]
pub struct Spans {
    tracer: Option<(SdkTracer, SdkTracerProvider)>,
}

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tracer.is_some() {
            "Spans(otlp)"
        } else {
            "Spans(off)"
        })
    }
}

impl Spans {
    /// Starts exporting; call inside the agent's Tokio runtime (exports run on it).
    pub fn start(export: &Export) -> Result<Spans, Error> {
        export.check()?;
        let endpoint_error = |e: &dyn std::fmt::Display| Error::Endpoint {
            endpoint: export.endpoint.clone(),
            reason: e.to_string(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(export.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| endpoint_error(&e))?;
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        };
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUE)
                    .with_scheduled_delay(FLUSH_EVERY)
                    .build(),
            )
            .build();
        let resource = Resource::builder_empty()
            .with_attributes(
                export
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(*k, v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                export.sampling_percent / 100.0,
            ))))
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "ferrymesh");
        Ok(Spans {
            tracer: Some((tracer, provider)),
        })
    }

    /// Starts exporting when `export` is given; off otherwise.
    pub fn start_if(export: Option<&Export>) -> Result<Spans, Error> {
        export.map_or(Ok(Spans::default()), Spans::start)
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// A server span for one request continuing `trace`; `trace` takes the span's
    /// ids and sampling flag, so what is sent upstream names this span as parent.
    /// None when export is off.
    pub fn request(&self, trace: &mut TraceContext, name: String) -> Option<RequestSpan> {
        let (tracer, _) = self.tracer.as_ref()?;
        let parent = match (
            trace.parent_id.as_deref(),
            TraceId::from_hex(&trace.trace_id),
        ) {
            (Some(parent), Ok(trace_id)) => {
                Context::new().with_remote_span_context(SpanContext::new(
                    trace_id,
                    SpanId::from_hex(parent).unwrap_or(SpanId::INVALID),
                    TraceFlags::new(u8::from_str_radix(&trace.flags, 16).unwrap_or(0)),
                    true,
                    TraceState::default(),
                ))
            }
            _ => Context::new(),
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let cx = opentelemetry::trace::Span::span_context(&span);
        trace.trace_id = cx.trace_id().to_string();
        trace.span_id = cx.span_id().to_string();
        trace.flags = format!("{:02x}", cx.trace_flags().to_u8());
        Some(RequestSpan(span))
    }

    /// Sends what is queued and stops, from async code (at exit).
    pub async fn close(&self) {
        if self.enabled() {
            let spans = self.clone();
            let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
        }
    }

    /// Sends what is queued and stops (blocking).
    pub fn shutdown(&self) {
        if let Some((_, provider)) = &self.tracer {
            if let Err(e) = provider.shutdown() {
                tracing::debug!(error = %e, "trace export shutdown");
            }
        }
    }
}

/// A request's span, ended by the log phase with what the request did.
pub struct RequestSpan(opentelemetry_sdk::trace::Span);

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSpan")
    }
}

impl RequestSpan {
    /// Ends the span with its final name and attributes; a 5xx is an error span
    /// (OpenTelemetry's rule for server spans).
    pub fn end(mut self, name: String, attributes: Vec<KeyValue>, status: u16) {
        use opentelemetry::trace::{Span as _, Status};
        self.0.update_name(name);
        self.0.set_attributes(attributes);
        if status >= 500 {
            self.0.set_status(Status::error(format!("HTTP {status}")));
        }
        self.0.end();
    }
}

/// Runs the OTLP exporter's calls on the agent's runtime: the SDK's batch thread
/// has no Tokio reactor, which tonic's channel needs.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_settings_are_checked() {
        let export = |endpoint: &str, sampling_percent| Export {
            endpoint: endpoint.into(),
            sampling_percent,
            resource: vec![],
        };
        let cases = [
            ("http://10.0.0.1:4317", 1.0, true),
            ("http://collector.observability:4317", 100.0, true),
            ("https://10.0.0.1:4317", 1.0, false),
            ("10.0.0.1:4317", 1.0, false),
            ("http://", 1.0, false),
            ("http://10.0.0.1:4317", 101.0, false),
            ("http://10.0.0.1:4317", -1.0, false),
        ];
        for (endpoint, sampling, ok) in cases {
            assert_eq!(
                export(endpoint, sampling).check().is_ok(),
                ok,
                "{endpoint} {sampling}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_span_continues_the_callers_trace_and_is_sent_upstream_as_parent() {
        let spans = Spans::start(&Export {
            endpoint: "http://127.0.0.1:9".into(),
            sampling_percent: 0.0,
            resource: vec![],
        })
        .unwrap();
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        for (header, flags) in [(sampled, "01"), (unsampled, "00")] {
            let mut trace = TraceContext::from_header(Some(header));
            let span = spans.request(&mut trace, "GET".into()).unwrap();
            assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(trace.parent_id.as_deref(), Some("00f067aa0ba902b7"));
            assert_ne!(trace.span_id, "00f067aa0ba902b7");
            assert_eq!(trace.flags, flags, "the caller's decision is kept");
            assert_eq!(
                trace.header(),
                format!("00-{}-{}-{flags}", trace.trace_id, trace.span_id)
            );
            span.end("GET".into(), vec![], 200);
        }
        // A new trace at 0 %: not sampled, so nothing upstream records it either.
        let mut trace = TraceContext::from_header(None);
        spans.request(&mut trace, "GET".into()).unwrap();
        assert_eq!(trace.flags, "00");
        assert!(Spans::default().request(&mut trace, "GET".into()).is_none());
        spans.close().await;
    }
}
