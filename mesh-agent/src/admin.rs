//! The agent's admin endpoints on the shared server (`mesh_infra::admin`): on
//! localhost `/stats` (JSON counters, eBPF counters, certificates), `/config_dump`,
//! `/healthz/ready` and `/metrics`; on the public metrics port only `/metrics` and
//! readiness.
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use mesh_infra::admin::Reply;
use serde_json::{json, Value};

use crate::{datapath::DataPath, ebpf::KernelHandle, metrics::Metrics};

mod view;

pub use mesh_infra::admin::bind;

#[derive(Clone)]
pub struct Admin {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub kernel: KernelHandle,
    pub dp: DataPath,
    pub enrolled: Arc<std::sync::Mutex<Vec<String>>>,
    /// This node's name.
    pub node: String,
    /// The metrics endpoint (not localhost-only) serves only metrics and readiness.
    pub public: bool,
}

impl Admin {
    fn stats(&self) -> Value {
        let kernel = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        let ebpf: serde_json::Map<String, Value> = kernel
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let enrolled_netns = kernel.enrolled_count();
        drop(kernel);
        let inputs = &self.dp.inputs;
        let certificates: Vec<Value> = inputs
            .certs
            .summary()
            .into_iter()
            .map(|(id, left)| json!({"identity": id, "expires_in_s": left}))
            .collect();
        json!({
            "ready": self.ready.load(Ordering::Relaxed),
            "heap": crate::app::memory::heap(),
            "config": self.metrics.config.json(),
            "enrolled": *self.enrolled.lock().unwrap_or_else(|p| p.into_inner()),
            "enrolled_netns": enrolled_netns,
            "blocked": self.metrics.blocked_json(),
            "orig_dst_entries": inputs.orig_dst.as_ref().map(|o| o.len()),
            "ebpf": ebpf,
            "workloads": self.metrics.workloads_json(),
            "certificates": certificates,
            "certificate_counters": inputs.certs.counters.json(),
            "hbone": {"pool": inputs.pool.counters.json()},
        })
    }

    /// `/explain/<namespace>/<pod>/<ip:port>`: the decision trail of that connection.
    fn explain(&self, rest: &str) -> Reply {
        let mut parts = rest.splitn(3, '/');
        let (Some(ns), Some(pod), Some(target)) = (parts.next(), parts.next(), parts.next()) else {
            return Reply::not_found("give /explain/<namespace>/<pod>/<ip:port>");
        };
        let state = self.dp.inputs.state.load();
        let is_local = |ip| self.dp.pods.contains(ip);
        let inputs = crate::plan::Inputs {
            state: &state,
            is_local: &is_local,
            trust_domain: &self.dp.inputs.trust_domain,
            tunnel: self.dp.inputs.tunnel,
        };
        match crate::explain::explain(&inputs, &format!("{ns}/{pod}"), target) {
            Ok(e) => Reply::json(&e),
            Err(e) => Reply::not_found(&e.to_string()),
        }
    }

    pub fn respond(&self, path: &str) -> Reply {
        let ready = || Reply::ready(self.ready.load(Ordering::Relaxed));
        let metrics = || Reply::metrics(self.dp.inputs.telemetry.encode());
        if self.public {
            return match path {
                "/metrics" => metrics(),
                "/healthz/ready" | "/ready" => ready(),
                _ => Reply::not_found("this port serves /metrics and /healthz/ready"),
            };
        }
        match path {
            "/healthz/ready" | "/ready" => ready(),
            "/stats" => Reply::json(&self.stats()),
            "/metrics" => metrics(),
            "/config_dump" => Reply::json(&*self.dp.inputs.state.load().objects),
            "/node_view" => {
                Reply::json(&view::node_view(&self.node, &self.dp.inputs, &self.metrics))
            }
            p if p.starts_with("/explain/") => self.explain(&p["/explain/".len()..]),
            // The last refusals, newest first; `/denials/<namespace>/<pod>` for one pod's.
            "/denials" => Reply::json(&self.dp.inputs.telemetry.denials.recent(None)),
            p if p.starts_with("/denials/") => {
                let pod = &p["/denials/".len()..];
                Reply::json(&self.dp.inputs.telemetry.denials.recent(Some(pod)))
            }
            _ => Reply::not_found(
                "try /stats, /config_dump, /node_view, /denials, /metrics or /healthz/ready",
            ),
        }
    }
}

/// Serves `admin` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, admin: Admin) {
    let guard = admin.dp.inputs.guard.clone();
    let handler = crate::guard::Counted {
        handler: move |path: &str| admin.respond(path),
        guard,
    };
    mesh_infra::admin::serve(listener, Arc::new(handler)).await
}
