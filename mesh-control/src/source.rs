//! Where the control plane's config comes from: a directory of YAML files (`dir`)
//! or Kubernetes (`kube`). Each publishes versions on a watch channel.
use std::sync::Arc;

use mesh_model::model::Objects;

pub mod dir;
pub mod kube;
pub mod route_status;

/// One version of the config.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub version: u64,
    pub objects: Arc<Objects>,
    /// When the source saw the change that made it (Unix ms): where the time to
    /// reach the agents is measured from.
    pub seen_unix_ms: u64,
}

/// The latest version.
pub type Current = tokio::sync::watch::Receiver<Published>;

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
