//! Where the agent's config comes from: a local file (`file`), or the control
//! plane's stream (`control_plane`). Each compiles what it receives (`Compiler`) and
//! sends the agent the compiled state, or the reason it was refused; the last good
//! config stays in force.
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use mesh_model::{
    config,
    model::Objects,
    state::{State, StateHandle},
};

pub mod control_plane;

/// What the agent's main loop receives: a version, compiled, or a refusal.
pub enum Update {
    Apply(u64, Box<State>),
    Refused(u64, String),
}

/// Compiles each version against the state in force (reusing its unchanged parts).
#[derive(Clone)]
pub struct Compiler {
    current: StateHandle,
    generation: Arc<AtomicU64>,
}

impl Compiler {
    pub fn new(current: StateHandle) -> Compiler {
        Compiler {
            current,
            generation: Arc::default(),
        }
    }

    /// `origin` names where the objects came from in errors (a file, the control plane).
    pub fn compile(&self, origin: &str, objects: Objects) -> Result<State, config::Error> {
        let previous = self.current.load();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        State::compile(generation, Arc::new(objects), Some(&previous))
            .map_err(|e| config::Error::invalid(origin, e))
    }

    /// Loads and compiles a file.
    pub fn load(&self, path: &std::path::Path) -> Result<State, config::Error> {
        self.compile(&path.display().to_string(), config::load(path)?)
    }
}

/// A cheap fingerprint of the file: reload only when it changes.
fn fingerprint(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    use std::os::unix::fs::MetadataExt;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Polls a config file and sends each change (or why it was refused).
pub async fn file(
    path: PathBuf,
    interval: Duration,
    compiler: Compiler,
    tx: tokio::sync::mpsc::Sender<Update>,
) {
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
        let update = match compiler.load(&path) {
            Ok(s) => Update::Apply(n, Box::new(s)),
            Err(e) => Update::Refused(n, e.to_string()),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}
