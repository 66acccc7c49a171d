//! A conformance table for AuthorizationPolicy and PeerAuthentication (feature
//! `testing`): named cases from Istio's reference and ztunnel's tests, each with
//! a one-line source and Istio's verdicts (`case`), by cause (`table`,
//! `table_fields`). Run in file mode (this crate's tests) and through
//! mesh-control's translation of Kubernetes objects (its tests).
pub mod case;
mod table;
mod table_fields;

pub use table::cases;
