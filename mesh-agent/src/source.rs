//! Where the agent's config comes from: a local file (`file`), or the control
//! plane's stream (`control_plane`). Each sends the agent a version of the objects
//! or the reason it was refused; the last good config stays in force.
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use mesh_model::model::Objects;

pub mod control_plane;

/// What the agent's main loop receives: a version and its objects, or a refusal.
pub enum Update {
    Apply(u64, Box<Objects>),
    Refused(u64, String),
}

/// A cheap fingerprint of the file: reload only when it changes.
fn fingerprint(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    use std::os::unix::fs::MetadataExt;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Polls a config file and sends each change (or why it was refused).
pub async fn file(path: PathBuf, interval: Duration, tx: tokio::sync::mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(interval);
    let mut seen = fingerprint(&path);
    let mut n = 0;
    loop {
        tick.tick().await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        n += 1;
        let update = match mesh_model::config::load(&path) {
            Ok(o) => Update::Apply(n, Box::new(o)),
            Err(e) => Update::Refused(n, e.to_string()),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}
