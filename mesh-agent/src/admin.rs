//! Admin endpoint (localhost only): readiness, counters, config dump.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{datapath::DataPath, ebpf::KernelHandle, metrics::Metrics};

#[derive(Clone)]
pub struct Admin {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub kernel: KernelHandle,
    pub dp: DataPath,
    pub enrolled: Arc<std::sync::Mutex<Vec<String>>>,
    /// The metrics endpoint (not localhost-only) serves only metrics and readiness.
    pub public: bool,
}

impl Admin {
    fn stats(&self) -> serde_json::Value {
        let kernel = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        let ebpf: serde_json::Map<String, serde_json::Value> = kernel
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let enrolled_netns = kernel.enrolled_count();
        drop(kernel);
        serde_json::json!({
            "ready": self.ready.load(Ordering::Relaxed),
            "heap": crate::app::heap(),
            "config": {
                "generation": self.metrics.config.generation.get(),
                "reloads": self.metrics.config.reloads.get(),
                "errors": self.metrics.config.errors.get(),
                "applied_unix_ms": self.metrics.config.applied_unix_ms.get(),
                "last_error": self.metrics.last_config_error(),
            },
            "enrolled": *self.enrolled.lock().unwrap_or_else(|p| p.into_inner()),
            "enrolled_netns": enrolled_netns,
            "orig_dst_entries": self.dp.inputs.orig_dst.as_ref().map(|o| o.len()),
            "ebpf": ebpf,
            "workloads": self.metrics.workloads_json(),
            "certificates": self.dp.inputs.certs.summary().into_iter()
                .map(|(id, left)| serde_json::json!({"identity": id, "expires_in_s": left}))
                .collect::<Vec<_>>(),
            "certificate_counters": &*self.dp.inputs.certs.counters,
            "hbone": {
                "pool": &self.dp.inputs.pool.counters,
            },
        })
    }

    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if self.public && !matches!(path, "/metrics" | "/healthz/ready" | "/ready") {
            let mut r = Response::new(Full::new(Bytes::from(
                "not found; this port serves /metrics and /healthz/ready\n",
            )));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let (status, body) = match path {
            "/healthz/ready" | "/ready" => {
                if self.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready\n".to_owned())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
                }
            }
            "/stats" => (StatusCode::OK, self.stats().to_string()),
            "/metrics" => (StatusCode::OK, self.dp.inputs.telemetry.encode()),
            "/config_dump" => {
                let state = self.dp.inputs.state.load();
                (
                    StatusCode::OK,
                    serde_json::to_string(&*state.objects).unwrap_or_default(),
                )
            }
            _ => (
                StatusCode::NOT_FOUND,
                "not found; try /stats, /config_dump or /healthz/ready\n".to_owned(),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    }
}

pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = admin.respond(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds with SO_REUSEPORT so that, during a surge upgrade of the DaemonSet, the new
/// agent can listen before the old one has gone (both answer until it has).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}
