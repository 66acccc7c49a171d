//! The compiled L7 configuration: routes by parent, resilience by route and backend,
//! JWT rules. Built from the model by the config source (the one writer); a build
//! error rejects the whole config file.
mod build;
mod ctx;
mod filters;
mod policy;
mod queries;
mod types;

pub use types::*;
