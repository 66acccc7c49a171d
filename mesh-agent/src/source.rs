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
    time::Duration,
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
        self.compile_with(origin, objects, true)
    }

    /// As `compile`, but nothing is reused: for inputs outside the objects that
    /// changed (fetched JWKS).
    pub fn compile_all(&self, origin: &str, objects: Objects) -> Result<State, config::Error> {
        self.compile_with(origin, objects, false)
    }

    fn compile_with(
        &self,
        origin: &str,
        objects: Objects,
        reuse: bool,
    ) -> Result<State, config::Error> {
        let previous = self.current.load();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let previous = reuse.then_some(&*previous);
        let state = State::compile(generation, Arc::new(objects), previous)
            .map_err(|e| config::Error::invalid(origin, e))?;
        for r in &state.l7.rejected {
            tracing::warn!(route = %r.route, parent = %r.parent, "route not attached: {}", r.reason);
        }
        for (object, what) in state.fail_closed() {
            tracing::warn!(%object, "policy not fully understood, enforced fail-closed: {what}");
        }
        Ok(state)
    }

    /// Loads and compiles a file.
    pub fn load(&self, path: &std::path::Path) -> Result<State, config::Error> {
        self.compile(&path.display().to_string(), config::load(path)?)
    }
}

/// Sends each change of a config file (or why it was refused), as inotify sees it.
pub async fn file(
    path: PathBuf,
    debounce: Duration,
    compiler: Compiler,
    tx: tokio::sync::mpsc::Sender<Update>,
) {
    let mut watch = match mesh_infra::watch::file(&path, debounce) {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Update::Refused(0, e.to_string())).await;
            return;
        }
    };
    let mut n = 0;
    while watch.changed().await.is_some() {
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
