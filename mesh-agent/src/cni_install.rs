//! Puts `ferrymesh-cni` into the node's CNI config (the DaemonSet's init
//! container runs `mesh-agent cni-install`): the binary copied into the CNI bin
//! directory, and the plugin appended to the chain of the node's primary network
//! config (the first `.conflist`/`.conf` by name, as the kubelet picks it), so that
//! every new pod's ADD passes through it after the cluster's own plugin. Idempotent;
//! `--remove` takes it out again. Files are replaced atomically.
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub const PLUGIN: &str = "ferrymesh-cni";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a CNI network config: {why}")]
    Config { path: PathBuf, why: String },
    #[error("no CNI network config (*.conflist, *.conf) in {0}; is the cluster's CNI installed?")]
    NoConfig(PathBuf),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// `conf` (a .conflist, or a single-plugin .conf) with ferrymesh-cni last in its
/// chain, pointed at `socket`; or without it when `remove`. Pure.
pub fn chained(conf: Value, socket: &str, remove: bool) -> Result<Value, String> {
    let mut list = if conf.get("plugins").is_some() {
        conf
    } else if conf.get("type").is_some() {
        json!({
            "cniVersion": conf.get("cniVersion").cloned().unwrap_or(json!("1.0.0")),
            "name": conf.get("name").cloned().unwrap_or(json!("k8s-pod-network")),
            "plugins": [conf],
        })
    } else {
        return Err("neither `plugins` nor `type`".into());
    };
    let plugins = list["plugins"]
        .as_array_mut()
        .ok_or("`plugins` is not a list")?;
    plugins.retain(|p| p["type"] != PLUGIN);
    if !remove {
        plugins.push(json!({"type": PLUGIN, "agentSocket": socket}));
    }
    Ok(list)
}

/// The node's primary network config: the first by name.
fn primary(dir: &Path) -> Result<PathBuf, Error> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf")
            )
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| Error::NoConfig(dir.to_owned()))
}

fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    mesh_infra::file::replace(path, bytes, mode).map_err(io(path))
}

/// Installs (or removes) the plugin; returns the config file changed.
pub fn run(
    conf_dir: &Path,
    bin_dir: &Path,
    plugin_binary: &Path,
    socket: &str,
    remove: bool,
) -> Result<PathBuf, Error> {
    let conf_path = primary(conf_dir)?;
    let text = std::fs::read_to_string(&conf_path).map_err(io(&conf_path))?;
    let conf: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: conf_path.clone(),
        why: e.to_string(),
    })?;
    let new = chained(conf, socket, remove).map_err(|why| Error::Config {
        path: conf_path.clone(),
        why,
    })?;
    if !remove {
        let bytes = std::fs::read(plugin_binary).map_err(io(plugin_binary))?;
        replace(&bin_dir.join(PLUGIN), &bytes, 0o755)?;
    }
    let mut out = serde_json::to_vec_pretty(&new).unwrap_or_default();
    out.push(b'\n');
    // A .conf becomes a chain: same name, list format (the kubelet reads both).
    let target = if conf_path.extension().and_then(|e| e.to_str()) == Some("conf") {
        let _ = std::fs::remove_file(&conf_path);
        conf_path.with_extension("conflist")
    } else {
        conf_path
    };
    replace(&target, &out, 0o644)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_goes_last_in_the_chain_once() {
        let calico = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}, {"type": "portmap"}]});
        let once = chained(calico.clone(), "/s", false).expect("chained");
        let twice = chained(once.clone(), "/s", false).expect("again");
        assert_eq!(once, twice, "idempotent");
        let types: Vec<&str> = once["plugins"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["calico", "portmap", PLUGIN]);
        assert_eq!(once["plugins"][2]["agentSocket"], "/s");
        assert_eq!(chained(once, "/s", true).expect("removed"), calico);
        // A single-plugin .conf becomes a chain.
        let single = json!({"cniVersion": "0.4.0", "name": "bridge-net", "type": "bridge"});
        let c = chained(single, "/s", false).expect("chained");
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(c["plugins"][1]["type"], PLUGIN);
        assert!(chained(json!({"x": 1}), "/s", false).is_err());
    }

    #[test]
    fn install_copies_the_binary_and_chains_the_primary_config() {
        let root =
            std::env::temp_dir().join(format!("ferrymesh-cni-install-{}", std::process::id()));
        let (conf, bin) = (root.join("net.d"), root.join("bin"));
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let plugin = root.join("ferrymesh-cni-build");
        std::fs::write(&plugin, b"#!plugin").expect("plugin");
        std::fs::write(conf.join("10-calico.conflist"), json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}).to_string()).expect("conflist");
        std::fs::write(conf.join("99-other.conf"), "{\"type\": \"bridge\"}").expect("other");
        let changed =
            run(&conf, &bin, &plugin, "/var/lib/ferrymesh/n/cni.sock", false).expect("installed");
        assert_eq!(changed, conf.join("10-calico.conflist"));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&changed).expect("read")).expect("json");
        assert_eq!(v["plugins"][1]["type"], PLUGIN);
        assert_eq!(
            std::fs::read(bin.join(PLUGIN)).expect("copied"),
            b"#!plugin"
        );
        assert!(std::fs::read_to_string(conf.join("99-other.conf"))
            .expect("untouched")
            .contains("bridge"));
        run(&conf, &bin, &plugin, "/s", true).expect("removed");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&changed).expect("read")).expect("json");
        assert_eq!(v["plugins"].as_array().map(Vec::len), Some(1));
        assert!(matches!(
            run(&bin, &bin, &plugin, "/s", false),
            Err(Error::NoConfig(_))
        ));
        let _ = std::fs::remove_dir_all(&root);
    }
}
