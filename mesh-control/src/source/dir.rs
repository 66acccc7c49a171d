//! A directory of YAML files as the config: every `*.yaml`/`*.yml` file, watched
//! with inotify. Each change that parses and compiles (as an agent would compile it)
//! is a new version; a bad one is refused with the file, line and field, and agents
//! keep the version they have.
use std::{path::PathBuf, sync::Arc, time::Duration};

use mesh_model::{
    config::{self, Docs},
    model::Objects,
    state::State,
};
use tokio::sync::watch;

use super::{unix_ms, Current, Published};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("{0}")]
    Watch(#[from] mesh_infra::watch::Error),
}

/// The directory's objects and their compiled state (kept to reuse unchanged parts).
struct Loader {
    dir: PathBuf,
    docs: Docs,
    compiled: Option<State>,
}

impl Loader {
    fn load(&mut self) -> Result<Arc<Objects>, config::Error> {
        let objects = Arc::new(config::load_dir_with(&self.dir, &mut self.docs)?);
        let state = State::compile(0, objects.clone(), self.compiled.as_ref())
            .map_err(|e| config::Error::invalid(&self.dir.display().to_string(), e))?;
        for r in &state.l7.rejected {
            tracing::warn!(route = %r.route, parent = %r.parent, "route not attached: {}", r.reason);
        }
        self.compiled = Some(state);
        Ok(objects)
    }
}

/// Loads the directory (a first good config is required), then publishes each good
/// change.
pub fn watch_dir(
    dir: PathBuf,
    debounce: Duration,
) -> Result<(Current, tokio::task::JoinHandle<()>), Error> {
    let mut watch = mesh_infra::watch::dir(&dir, &["yaml", "yml"], debounce)?;
    let mut loader = Loader {
        dir,
        docs: Docs::default(),
        compiled: None,
    };
    let first = Published {
        version: 1,
        objects: loader.load()?,
        seen_unix_ms: unix_ms(),
    };
    let (tx, rx) = watch::channel(first);
    let task = tokio::spawn(async move {
        let mut version = 1;
        while watch.changed().await.is_some() {
            let seen_unix_ms = unix_ms();
            match loader.load() {
                Ok(o) if *o == *tx.borrow().objects => {}
                Ok(objects) => {
                    version += 1;
                    tracing::info!(version, "config changed");
                    let p = Published {
                        version,
                        objects,
                        seen_unix_ms,
                    };
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("config refused, agents keep version {version}: {e}"),
            }
        }
    });
    Ok((rx, task))
}
