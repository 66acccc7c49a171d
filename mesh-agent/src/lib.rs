//! ferrymesh node agent.
//!
//! Config state is kept apart from the data path: `source` brings config (a file or
//! the control plane), `mesh_model` parses it and builds the immutable snapshot that
//! the data path only reads, `ebpf` is the only code that writes kernel maps, `inpod` makes sockets inside pod network namespaces, and
//! `tunnel` decides (pure functions) and then proxies.
//!
//! Unsafe code is confined to the modules that talk to the kernel.
#![deny(unsafe_code)]

pub mod admin;
#[allow(unsafe_code)]
pub mod app;
#[allow(unsafe_code)]
pub mod ebpf;
pub mod enrol;
pub mod identity;
#[allow(unsafe_code)]
pub mod inpod;
pub mod metrics;
pub mod probe;
pub mod shared;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod waypoint;
