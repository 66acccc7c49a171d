//! The ferrymesh lab: a whole cluster on one machine.
//!
//! Every node and pod is a network namespace this process creates (plus a cgroup
//! per pod), nodes are joined by a bridge inside a fabric namespace, and one agent
//! runs per node. Nothing is linked to the machine's own network namespace. Names
//! are unique per run and everything is removed on drop, also after a panic;
//! `cargo xtask lab clean` removes what a killed run left behind.
#![forbid(unsafe_code)]

pub mod app;
pub mod collector;
pub mod eventually;
pub mod lab;
pub mod netns;
pub mod sys;

pub use app::App;
pub use eventually::eventually;
pub use lab::{Lab, LabSpec, OldAgent, PodSpec, ServiceSpec, Waypoint};
