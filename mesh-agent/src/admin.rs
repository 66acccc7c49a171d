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

    /// `/explain/<namespace>/<pod>/<ip:port>[/http/<METHOD>/<path>]`: the decision
    /// trail of that connection (and the route of that request).
    fn explain(&self, rest: &str) -> Reply {
        let mut parts = rest.splitn(3, '/');
        let (Some(ns), Some(pod), Some(target)) = (parts.next(), parts.next(), parts.next()) else {
            return Reply::not_found("give /explain/<namespace>/<pod>/<ip:port>");
        };
        let (target, http) = match target.split_once("/http/") {
            Some((t, h)) => (
                t,
                h.split_once('/')
                    .map(|(m, p)| (m.to_owned(), format!("/{p}"))),
            ),
            None => (target, None),
        };
        let state = self.dp.inputs.state.load();
        let is_local = |ip| self.dp.pods.contains(ip);
        let inputs = crate::plan::Inputs {
            state: &state,
            is_local: &is_local,
            trust_domain: &self.dp.inputs.trust_domain,
            tunnel: self.dp.inputs.tunnel,
        };
        let mut e = match crate::explain::explain(&inputs, &format!("{ns}/{pod}"), target) {
            Ok(e) => e,
            Err(e) => return Reply::not_found(&e.to_string()),
        };
        if let Some((method, path)) = http {
            match self.request_step(&state, &e, (&method, &path)) {
                Ok(step) => e.request = step,
                Err(err) => return Reply::not_found(&err.to_string()),
            }
        }
        Reply::json(&e)
    }

    /// The route of `method path` when this node's waypoint serves the connection.
    fn request_step(
        &self,
        state: &mesh_model::state::State,
        e: &mesh_model::explain::Explanation,
        (method, path): (&str, &str),
    ) -> Result<Option<mesh_model::explain::RequestStep>, crate::explain::Error> {
        let original: std::net::SocketAddr = e
            .target
            .parse()
            .map_err(|_| crate::explain::Error::BadTarget(e.target.clone()))?;
        let Some(crate::plan::Parent::Service { service, port }) =
            crate::plan::l7_parent(state, original)
        else {
            return Ok(None);
        };
        let pod = state
            .workloads
            .iter()
            .find(|w| w.key() == e.source)
            .and_then(|w| w.addresses().iter().find_map(|a| self.dp.pods.get(*a)))
            .ok_or_else(|| crate::explain::Error::NoSuchPod(e.source.clone()))?;
        let client =
            std::net::SocketAddr::new(pod.address_like(&original.ip()).unwrap_or(original.ip()), 0);
        let conn = crate::waypoint::conn::Conn {
            source: Some(pod.identity.clone()),
            pod,
            dp: self.dp.clone(),
            l7: Arc::new(crate::waypoint::Runtime::default()),
            parent: crate::plan::Parent::Service { service, port },
            client,
            original,
            at_destination: false,
            trusted_proxies: 0,
        };
        crate::explain::request_route(&conn, state, (method, path)).map(Some)
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
