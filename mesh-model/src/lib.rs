//! ferrymesh's model, shared by the node agent, the control plane and the tools.
//!
//! - `model`: Kubernetes-shaped objects (Workload, Service, policies, routes);
//!   `config` loads them from YAML and validates them, naming file, line and field.
//! - `state`, `authz`, `l7`: what the objects compile to and the pure decisions over
//!   it (authorization, the L7 route table, JWT rules), used by the agent's data
//!   path and by the control plane to validate and explain.
//! - `identity` (SPIFFE ids), `ca` (the CA core: root, CSR checks, signing), and
//!   `proto` / `scope`: the wire protocols between node agents and the control plane.
//!
//! Nothing here builds eBPF, so the control plane, meshctl and xtask build without
//! the kernel toolchain.
#![forbid(unsafe_code)]

pub mod authz;
pub mod ca;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod denial;
pub mod explain;
pub mod identity;
pub mod l7;
pub mod model;
pub mod node_view;
pub mod scope;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Generated gRPC code.
pub mod proto {
    /// The CA: node agents send CSRs, get leaf certificates.
    pub mod ca {
        tonic::include_proto!("ferrymesh.ca.v1");
    }
    /// Config distribution: node-scoped snapshots and deltas.
    pub mod config {
        tonic::include_proto!("ferrymesh.config.v1");
    }
}
