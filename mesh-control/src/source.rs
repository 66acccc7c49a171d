//! Where the control plane's config comes from: a directory of YAML files (`dir`)
//! or Kubernetes (`kube`). Each publishes versions on a watch channel.
use std::sync::Arc;

use mesh_model::model::Objects;

pub mod dir;
pub mod kube;

/// The latest version and its objects.
pub type Current = tokio::sync::watch::Receiver<(u64, Arc<Objects>)>;
