//! The data path's inputs for `mesh-agent run`, with every counter (Istio's, the
//! agent's own, the pool's, the certificates', the hardening limits', the eBPF
//! programs') registered in the one registry `:15020/metrics` serves.
use std::{sync::Arc, time::Duration};

use mesh_model::state::StateHandle;

use super::args::RunArgs;
use crate::{
    datapath::{DataPath, Inputs},
    metrics::{KernelCounters, Metrics},
    telemetry::{otlp::Spans, Telemetry},
    tunnel::hbone::pool::Pool,
};

/// The data path's inputs, with every counter registered in one registry.
pub(super) fn data_path(
    args: &RunArgs,
    state: &StateHandle,
    (certs, roots): (
        crate::identity::manager::CertManager,
        Arc<rustls::RootCertStore>,
    ),
    orig_dst: crate::ebpf::OrigDst,
    kernel: &crate::ebpf::KernelHandle,
    spans: Spans,
) -> (DataPath, Arc<Metrics>) {
    let mut telemetry = Telemetry::new(&args.identity.cluster_id);
    telemetry.access_log = args.access_log.clone();
    telemetry.spans = spans;
    let metrics = Arc::new(Metrics::new(telemetry.registry()));
    let pool = Pool::new(Duration::from_secs(60));
    pool.counters.register(telemetry.registry());
    certs.counters.register(telemetry.registry());
    let guard = crate::guard::Guard::new(args.caps.limits());
    guard.register(telemetry.registry());
    KernelCounters(kernel.clone()).register(telemetry.registry());
    let certs = Arc::new(certs);
    crate::metrics::process::register(telemetry.root_registry(), certs.clone());
    let dp = DataPath::new(Inputs {
        orig_dst: Some(orig_dst),
        state: state.clone(),
        trust_domain: args.identity.trust_domain.clone(),
        certs,
        roots,
        pool,
        telemetry,
        tunnel: args.tunnel,
        guard,
    });
    (dp, metrics)
}
