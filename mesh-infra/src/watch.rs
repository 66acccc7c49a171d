//! The one file watcher: inotify (through `notify`) on a config file's directory
//! (so that a file replaced by rename is seen) or on a directory of config files;
//! events are debounced into one tick, and the caller reloads. No polling.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot watch {path} for changes: {source}; check that it exists (and fs.inotify.max_user_watches)")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// What counts as a change.
#[derive(Debug, Clone)]
enum Filter {
    /// This one file.
    File(PathBuf),
    /// Files with one of these extensions in the directory.
    Extensions(Vec<String>),
}

impl Filter {
    fn matches(&self, path: &Path) -> bool {
        match self {
            Filter::File(f) => path == f,
            Filter::Extensions(exts) => path
                .extension()
                .and_then(OsStr::to_str)
                .is_some_and(|e| exts.iter().any(|x| x == e)),
        }
    }
}

/// Changes of a file or directory, as ticks.
pub struct Watch {
    rx: mpsc::Receiver<()>,
    debounce: Duration,
    _watcher: notify::RecommendedWatcher,
}

/// Whether an event is a change of what `filter` names. Our own reads show up as
/// access events; they change nothing.
fn relevant(filter: &Filter, ev: &notify::Event) -> bool {
    !matches!(ev.kind, EventKind::Access(_)) && ev.paths.iter().any(|p| filter.matches(p))
}

fn start(dir: &Path, filter: Filter, debounce: Duration) -> Result<Watch, Error> {
    let (tx, rx) = mpsc::channel(1);
    let handler = move |r: notify::Result<notify::Event>| {
        let Ok(ev) = r else { return };
        if !relevant(&filter, &ev) {
            return;
        }
        // Full means a tick is already pending: this change is in it.
        let _ = tx.try_send(());
    };
    let err = |source| Error::Watch {
        path: dir.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(err)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(Watch {
        rx,
        debounce,
        _watcher: watcher,
    })
}

/// Watches one file (through its directory).
pub fn file(path: &Path, debounce: Duration) -> Result<Watch, Error> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let dir = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    start(&dir, Filter::File(path), debounce)
}

/// Watches the files of a directory that have one of `extensions`.
pub fn dir(dir: &Path, extensions: &[&str], debounce: Duration) -> Result<Watch, Error> {
    let exts = extensions.iter().map(|e| (*e).to_owned()).collect();
    start(dir, Filter::Extensions(exts), debounce)
}

impl Watch {
    /// Waits for a change, then for `debounce` without one (a burst is one tick).
    /// None when the watcher stopped.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.recv().await?;
        loop {
            match tokio::time::timeout(self.debounce, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for a tick, failing the test after `within`.
    async fn tick(w: &mut Watch, what: &str) {
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .unwrap_or_else(|_| panic!("no change seen: {what}"))
            .expect("watcher alive");
    }

    #[test]
    fn which_events_are_changes() {
        use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind, RenameMode};
        let file = Filter::File(PathBuf::from("/etc/fm/mesh.yaml"));
        let dir = Filter::Extensions(vec!["yaml".into(), "yml".into()]);
        let ev = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let cases = [
            (
                "the file written",
                &file,
                ev(EventKind::Modify(ModifyKind::Any), "/etc/fm/mesh.yaml"),
                true,
            ),
            (
                "the file renamed into place",
                &file,
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    "/etc/fm/mesh.yaml",
                ),
                true,
            ),
            (
                "the file read",
                &file,
                ev(EventKind::Access(AccessKind::Any), "/etc/fm/mesh.yaml"),
                false,
            ),
            (
                "its temporary file",
                &file,
                ev(EventKind::Create(CreateKind::File), "/etc/fm/mesh.yaml.tmp"),
                false,
            ),
            (
                "a neighbour",
                &file,
                ev(EventKind::Modify(ModifyKind::Any), "/etc/fm/other.yaml"),
                false,
            ),
            (
                "a YAML file in the directory",
                &dir,
                ev(EventKind::Create(CreateKind::File), "/etc/fm/a.yml"),
                true,
            ),
            (
                "one removed",
                &dir,
                ev(EventKind::Remove(RemoveKind::File), "/etc/fm/a.yaml"),
                true,
            ),
            (
                "a file of another kind",
                &dir,
                ev(EventKind::Modify(ModifyKind::Any), "/etc/fm/notes.txt"),
                false,
            ),
        ];
        for (name, filter, event, want) in cases {
            assert_eq!(relevant(filter, &event), want, "{name}");
        }
    }

    #[tokio::test]
    async fn sees_writes_renames_and_removals() {
        let dir = std::env::temp_dir().join(format!("fm-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("mesh.yaml");
        std::fs::write(&file, "a").expect("write");
        let mut w = super::file(&file, Duration::from_millis(20)).expect("watch");
        std::fs::write(&file, "b").expect("write in place");
        tick(&mut w, "write in place").await;
        std::fs::write(dir.join("mesh.yaml.tmp"), "c").expect("tmp");
        std::fs::rename(dir.join("mesh.yaml.tmp"), &file).expect("rename");
        tick(&mut w, "replaced by rename").await;
        let mut d = super::dir(&dir, &["yaml", "yml"], Duration::from_millis(20)).expect("dir");
        std::fs::write(dir.join("more.yml"), "y").expect("write");
        tick(&mut d, "a new file in the directory").await;
        std::fs::remove_file(dir.join("more.yml")).expect("remove");
        tick(&mut d, "a removed file").await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
