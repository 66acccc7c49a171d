//! `/node_view`: the workloads, services, policies, certificates and per-pod
//! connections one agent holds, typed as `mesh_model::node_view`.
use mesh_model::{
    node_view::{CertificateRow, ConnectionRow, NodeView, PolicyRow, ServiceRow, WorkloadRow},
    state::{ServiceInfo, State, WorkloadInfo},
};

use crate::{datapath::Inputs, metrics::Metrics};

fn workload(inputs: &Inputs, w: &WorkloadInfo) -> WorkloadRow {
    WorkloadRow {
        workload: w.key(),
        node: w.node().to_owned(),
        addresses: w.addresses().iter().map(ToString::to_string).collect(),
        identity: inputs.identity_of(w).to_string(),
        protocol: if w.captured { "HBONE" } else { "TCP" }.to_owned(),
        l7_policy: w.l7,
    }
}

fn service(s: &ServiceInfo) -> ServiceRow {
    ServiceRow {
        service: s.key(),
        vips: s.vips().iter().map(ToString::to_string).collect(),
        ports: s
            .ports
            .iter()
            .map(|p| {
                let l7 = if p.l7 { " L7" } else { "" };
                format!(
                    "{} -> {} ({} endpoints){l7}",
                    p.port,
                    p.target_port,
                    p.endpoints.len()
                )
            })
            .collect(),
        waypoint: s.waypoint.as_ref().map(|w| w.key()),
    }
}

fn policies(state: &State) -> Vec<PolicyRow> {
    state
        .policies
        .authz
        .iter()
        .map(|p| PolicyRow {
            policy: p.name.clone(),
            action: format!("{:?}", p.action).to_uppercase(),
            dry_run: p.dry_run,
            rules: p.rules.len(),
            degraded: p.degraded.clone(),
        })
        .collect()
}

/// The view of the agent on `node`, from the state in force.
pub fn node_view(node: &str, inputs: &Inputs, metrics: &Metrics) -> NodeView {
    let state = inputs.state.load();
    let mut services: Vec<ServiceRow> =
        state.services_by_key.values().map(|s| service(s)).collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    let certificates = inputs
        .certs
        .held()
        .into_iter()
        .map(|(identity, cert)| CertificateRow {
            identity,
            serial: cert.as_ref().map(|c| c.0.clone()),
            expires_in_s: cert.map(|c| c.1),
        })
        .collect();
    let connections = metrics
        .connection_rows()
        .into_iter()
        .map(|(pod, active, bytes_sent, bytes_received)| ConnectionRow {
            pod,
            active,
            bytes_sent,
            bytes_received,
        })
        .collect();
    NodeView {
        node: node.to_owned(),
        config_generation: state.generation,
        workloads: state
            .workloads
            .iter()
            .map(|w| workload(inputs, w))
            .collect(),
        services,
        policies: policies(&state),
        certificates,
        connections,
    }
}
