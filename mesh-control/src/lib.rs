//! The ferrymesh control plane: the CA, config distribution to node agents, the
//! admin API for meshctl, and the config sources (a directory of YAML files, or
//! Kubernetes watchers turned into the model by `translate`, pure and table-tested).
//! Builds without eBPF, aya or bpf-linker.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca_service;
pub mod control_tls;
pub mod distribution;
pub mod node_auth;
pub mod serve;
pub mod source;
pub mod translate;
