//! Workload certificates kept in the agent's state directory, so an agent that
//! restarts while the CA is unreachable (a control plane outage, a crash during
//! one) serves mTLS at once with the certificates it had, until they expire or the
//! CA answers. One file per identity, root-only (0600), written atomically; a
//! file that does not parse, names another identity or has expired is ignored.
use std::{
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use mesh_model::identity::Identity;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    chain: Vec<String>,
    key: String,
}

#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
}

impl CertStore {
    /// Certificates under `<state_dir>/certs`.
    pub fn new(state_dir: &Path) -> CertStore {
        CertStore {
            dir: state_dir.join("certs"),
        }
    }

    /// Where `id`'s certificate is kept: its SPIFFE id hex-encoded (no separator
    /// can escape the directory).
    pub fn file(&self, id: &Identity) -> PathBuf {
        let name: String = id.to_string().bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, id: &Identity, chain: &[String], key: &str) -> std::io::Result<()> {
        let body = serde_json::to_vec(&Stored {
            chain: chain.to_vec(),
            key: key.to_owned(),
        })
        .map_err(std::io::Error::other)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        mesh_infra::file::replace(&self.file(id), &body, 0o600)
    }

    /// The stored (chain, key) PEMs of `id`, unchecked.
    pub fn load(&self, id: &Identity) -> std::io::Result<Option<(Vec<String>, String)>> {
        let body = match std::fs::read(self.file(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let s = serde_json::from_slice::<Stored>(&body)?;
        Ok(Some((s.chain, s.key)))
    }

    pub fn remove(&self, id: &Identity) {
        let _ = std::fs::remove_file(self.file(id));
    }
}
