//! Kubernetes-shaped objects of the local config file.
//!
//! Each object has `apiVersion`, `kind`, `metadata` and `spec`, as Kubernetes has.
//! Specs reject unknown fields so that a typo is an error, not a silent default.
mod core;
mod gateway;
mod interned;
mod labels;
mod meta;
mod objects;
mod security;
mod traffic;

pub use self::core::*;
pub use gateway::*;
pub use interned::Interned;
pub use labels::Labels;
pub use meta::*;
pub use objects::*;
pub use security::*;
pub use traffic::*;
