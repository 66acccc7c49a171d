//! ferrymesh node agent.
//!
//! Config state is kept apart from the data path: `source` brings config (a file or
//! the control plane), `mesh_model` parses it and builds the immutable snapshot that
//! the data path only reads, `ebpf` is the only code that writes kernel maps,
//! `inpod` makes sockets inside pod network namespaces, and the enroller is the only
//! writer of the local-pod registry (`local`).
//!
//! A connection is decided apart from being done: `plan` chooses how it leaves a pod
//! (pure, table-tested), `connect` executes the choice (one executor per way),
//! `enforce` is the one place policy is applied; `tunnel` accepts and splices, the
//! `waypoint` serves HTTP.
//!
//! Unsafe code is confined to the modules that talk to the kernel.
#![deny(unsafe_code)]

pub mod admin;
#[allow(unsafe_code)]
pub mod app;
pub mod cni;
pub mod cni_install;
pub mod connect;
pub mod datapath;
#[allow(unsafe_code)]
pub mod ebpf;
pub mod enforce;
pub mod enrol;
pub mod established;
pub mod explain;
pub mod fuzzing;
pub mod guard;
#[allow(unsafe_code)]
pub mod handoff;
pub mod identity;
#[allow(unsafe_code)]
pub mod inpod;
pub mod jwks_fetch;
pub mod local;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod waypoint;
