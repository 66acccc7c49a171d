//! The node's side of workload identity: the CA client and the certificate manager
//! (one certificate per service account with a pod on this node). SPIFFE ids and
//! the CA core live in `mesh_model`.
pub mod client;
pub mod manager;
pub mod store;
