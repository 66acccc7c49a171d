//! The last good config from the control plane, kept on disk: an agent that
//! (re)starts while the control plane is unreachable enrols its pods from it at
//! once instead of waiting, so no restart opens a gap in capture. Written
//! atomically (a temporary file renamed over the old one), readable by root only.
use std::path::{Path, PathBuf};

use mesh_model::{model::Objects, state::State};

const FILE: &str = "last-config.yaml";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The objects as YAML documents (each one's JSON form, which YAML reads).
fn render(objects: &Objects) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for o in objects.iter() {
        out.push_str("---\n");
        out.push_str(std::str::from_utf8(&o.to_json()?).unwrap_or_default());
        out.push('\n');
    }
    Ok(out)
}

/// Persists `objects` as the last good config in `dir`.
pub fn save(dir: &Path, objects: &Objects) -> std::io::Result<()> {
    let text = render(objects).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    mesh_infra::file::replace(&path(dir), text.as_bytes(), 0o600)
}

/// The persisted config, compiled; None (logged) when there is none or it does
/// not compile any more.
pub fn load(dir: &Path) -> Option<State> {
    let p = path(dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %p.display(), "the persisted config cannot be read: {e}");
            return None;
        }
    };
    match mesh_model::config::check(&p.display().to_string(), &text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %p.display(), "the persisted config is not used: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_model::testing::{config, namespace, policy, workload};

    #[test]
    fn a_saved_config_loads_back_the_same_objects() {
        let dir = std::env::temp_dir().join(format!("ferrymesh-persist-{}", std::process::id()));
        let objects = config()
            .with(namespace("shop").ambient())
            .with(workload("shop", "web-1").node("a").addr("198.19.1.10"))
            .with(
                policy("shop", "p")
                    .select("app", "web")
                    .from_principal("cluster.local/ns/shop/sa/client"),
            );
        super::save(&dir, &objects).expect("saved");
        let state = super::load(&dir).expect("loads");
        assert_eq!(*state.objects, objects);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
