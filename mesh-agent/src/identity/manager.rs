//! The agent's certificates: one per identity with a pod on this node, requested
//! when its first pod is enrolled, renewed at half-life, dropped with its last pod.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use tokio::{sync::watch, task::JoinHandle};

use super::{client::CaClient, store::CertStore};
use crate::metrics::Counter;
use mesh_model::{ca::Ca, identity::Identity};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ca(#[from] mesh_model::ca::Error),
    #[error("{0}")]
    Client(#[from] super::client::Error),
    #[error("the CA returned an unusable certificate or key: {0}")]
    Pem(String),
    #[error("the CA returned a certificate for {got}, asked for {want}")]
    WrongIdentity { want: Identity, got: String },
}

/// Who signs: an in-process CA (single node) or the CA service over gRPC.
pub enum Signer {
    Local(Arc<Ca>),
    Remote(Box<CaClient>),
}

impl Signer {
    async fn sign(&self, id: &Identity, ttl: Duration) -> Result<(Vec<String>, String), Error> {
        let (csr, key) = mesh_model::ca::new_csr(id)?;
        let chain = match self {
            Signer::Local(ca) => {
                let (_, parsed) = ca.csr_identity(&csr)?;
                vec![ca.sign(&parsed, id, ttl)?]
            }
            Signer::Remote(client) => client.sign(csr, ttl).await?.0,
        };
        Ok((chain, key))
    }
}

/// A workload certificate ready for rustls.
#[derive(Debug)]
pub struct WorkloadCert {
    pub identity: Identity,
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's serial number (hex).
    pub serial: String,
}

impl WorkloadCert {
    pub fn from_pem(
        identity: &Identity,
        chain_pem: &[String],
        key_pem: &str,
    ) -> Result<WorkloadCert, Error> {
        let chain: Vec<CertificateDer<'static>> = chain_pem
            .iter()
            .map(|p| {
                CertificateDer::from_pem_slice(p.as_bytes()).map_err(|e| Error::Pem(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Pem("empty chain".into()))?;
        let got = crate::tls::peer_identity(std::slice::from_ref(leaf))
            .map_err(|e| Error::Pem(e.to_string()))?;
        if &got != identity {
            return Err(Error::WrongIdentity {
                want: identity.clone(),
                got: got.to_string(),
            });
        }
        let (not_before, not_after) =
            crate::tls::validity(leaf).map_err(|e| Error::Pem(e.to_string()))?;
        let serial = crate::tls::serial(leaf).map_err(|e| Error::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Pem(e.to_string()))?;
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::Pem(e.to_string()))?;
        Ok(WorkloadCert {
            identity: identity.clone(),
            certified: Arc::new(CertifiedKey::new(chain, signing)),
            not_before,
            not_after,
            serial,
        })
    }
}

struct Slot {
    refs: usize,
    rx: watch::Receiver<Option<Arc<WorkloadCert>>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
pub struct CertCounters {
    pub issued: Counter,
    pub failures: Counter,
    pub restored: Counter,
}

impl CertCounters {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "certificates_issued",
            "Workload certificates received from the CA",
            self.issued.clone(),
        );
        r.register(
            "certificate_failures",
            "Certificate requests that failed",
            self.failures.clone(),
        );
        r.register(
            "certificates_restored",
            "Workload certificates taken from the state directory at start",
            self.restored.clone(),
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"issued": self.issued.get(), "failures": self.failures.get(), "restored": self.restored.get()})
    }
}

pub struct CertManager {
    signer: Arc<Signer>,
    ttl: Duration,
    slots: Mutex<HashMap<Identity, Slot>>,
    store: Option<CertStore>,
    pub counters: Arc<CertCounters>,
}

impl CertManager {
    pub fn new(signer: Signer, ttl: Duration) -> CertManager {
        CertManager {
            signer: Arc::new(signer),
            ttl,
            slots: Mutex::default(),
            store: None,
            counters: Arc::default(),
        }
    }

    /// Keeps each certificate in `store` and starts from a stored one that is
    /// still valid (see `store`).
    pub fn with_store(mut self, store: CertStore) -> CertManager {
        self.store = Some(store);
        self
    }

    /// One more pod with this identity on the node.
    pub fn acquire(&self, id: &Identity) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get_mut(id) {
            s.refs += 1;
            return;
        }
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(refresh(
            self.signer.clone(),
            id.clone(),
            (self.ttl, self.store.clone()),
            tx,
            self.counters.clone(),
        ));
        slots.insert(id.clone(), Slot { refs: 1, rx, task });
    }

    /// One pod fewer; the certificate goes with the last one.
    pub fn release(&self, id: &Identity) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get_mut(id) {
            s.refs -= 1;
            if s.refs == 0 {
                if let Some(s) = slots.remove(id) {
                    s.task.abort();
                }
                if let Some(store) = &self.store {
                    store.remove(id);
                }
                tracing::info!(identity = %id, "certificate dropped: no pod with this identity left on the node");
            }
        }
    }

    pub fn current(&self, id: &Identity) -> Option<Arc<WorkloadCert>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(id).and_then(|s| s.rx.borrow().clone())
    }

    /// The certificate, waiting up to `timeout` for the first one to arrive.
    pub async fn wait(&self, id: &Identity, timeout: Duration) -> Option<Arc<WorkloadCert>> {
        let mut rx = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(id)?.rx.clone()
        };
        let got = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match got {
            Ok(Ok(v)) => v.clone(),
            _ => None,
        }
    }

    /// (identity, serial and seconds until expiry; None while pending).
    pub fn held(&self) -> Vec<(String, Option<(String, i64)>)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        let mut v: Vec<_> = slots
            .iter()
            .map(|(id, s)| {
                let cert = s.rx.borrow().as_ref().map(|c| {
                    let left = match c.not_after.duration_since(now) {
                        Ok(d) => d.as_secs() as i64,
                        Err(e) => -(e.duration().as_secs() as i64),
                    };
                    (c.serial.clone(), left)
                });
                (id.to_string(), cert)
            })
            .collect();
        v.sort();
        v
    }

    /// (identity, seconds until expiry or None while pending) for the admin page.
    pub fn summary(&self) -> Vec<(String, Option<i64>)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut v: Vec<(String, Option<i64>)> = slots
            .iter()
            .map(|(id, s)| {
                let left = s.rx.borrow().as_ref().map(|c| {
                    c.not_after
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0)
                        - now
                });
                (id.to_string(), left)
            })
            .collect();
        v.sort();
        v
    }
}

/// Requests, then renews at half-life; retries with backoff on failure while the
/// current certificate (if any) stays in use. A valid stored certificate is in use
/// from the start, while the first request is made.
async fn refresh(
    signer: Arc<Signer>,
    id: Identity,
    (ttl, store): (Duration, Option<CertStore>),
    tx: watch::Sender<Option<Arc<WorkloadCert>>>,
    counters: Arc<CertCounters>,
) {
    if let Some(cert) = store.as_ref().and_then(|s| restore(s, &id)) {
        tracing::info!(identity = %id, "certificate restored from the state directory; renewing");
        counters.restored.inc();
        let _ = tx.send(Some(Arc::new(cert)));
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = match signer.sign(&id, ttl).await {
            Ok((chain, key)) => {
                if let Some(Err(e)) = store.as_ref().map(|s| s.save(&id, &chain, &key)) {
                    tracing::warn!(identity = %id, "the certificate is not stored (a restart during a CA outage will wait for the CA): {e}");
                }
                WorkloadCert::from_pem(&id, &chain, &key)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(cert) => {
                // Half of the remaining life: the CA backdates not_before a little
                // for clock skew, and that part does not count.
                let now = SystemTime::now();
                let life = cert.not_after.duration_since(now).unwrap_or_default();
                let renew_at = now + life / 2;
                tracing::info!(identity = %id, valid_for_s = life.as_secs(), "certificate issued");
                counters.issued.inc();
                let _ = tx.send(Some(Arc::new(cert)));
                backoff = Duration::from_millis(200);
                let wait = renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
            }
            Err(e) => {
                counters.failures.inc();
                tracing::warn!(identity = %id, "certificate request failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A restored certificate must have at least this much life left.
const MIN_LIFE: Duration = Duration::from_secs(60);

/// The stored certificate of `id`, if it is its own and has life left.
fn restore(store: &CertStore, id: &Identity) -> Option<WorkloadCert> {
    let restored = store.load(id).map_err(|e| e.to_string()).and_then(|s| {
        s.map(|(chain, key)| WorkloadCert::from_pem(id, &chain, &key).map_err(|e| e.to_string()))
            .transpose()
    });
    match restored {
        Ok(Some(c)) if c.not_after > SystemTime::now() + MIN_LIFE => Some(c),
        Ok(Some(_)) => {
            tracing::info!(identity = %id, "the stored certificate has (nearly) expired; not used");
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(identity = %id, path = %store.file(id).display(), "the stored certificate is not used: {e}");
            None
        }
    }
}

/// Serves the current certificate of one pod's identity (renewals apply to new
/// handshakes at once).
#[derive(Debug)]
pub struct PodCertResolver {
    pub manager: Arc<CertManager>,
    pub identity: Identity,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertManager")
    }
}

impl rustls::server::ResolvesServerCert for PodCertResolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.manager
            .current(&self.identity)
            .map(|c| c.certified.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::{restore, CertStore};
    use mesh_model::{ca::Ca, identity::Identity};

    fn signed(ca: &Ca, id: &Identity, ttl: Duration) -> (Vec<String>, String) {
        let (csr, key) = mesh_model::ca::new_csr(id).expect("csr");
        let (_, parsed) = ca.csr_identity(&csr).expect("parsed");
        (vec![ca.sign(&parsed, id, ttl).expect("signed")], key)
    }

    #[test]
    fn a_stored_certificate_comes_back_only_for_its_identity_and_while_valid() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("ferrymesh-certs-{}", std::process::id()));
        let ca = Arc::new(Ca::load_or_create(&dir.join("ca"), "cluster.local").expect("ca"));
        let store = CertStore::new(&dir);
        let web = Identity::new("cluster.local", "shop", "web");
        let db = Identity::new("cluster.local", "shop", "db");
        let (chain, key) = signed(&ca, &web, Duration::from_secs(3600));
        store.save(&web, &chain, &key).expect("saved");
        let back = restore(&store, &web).expect("restored");
        assert_eq!(back.identity, web);
        assert!(restore(&store, &db).is_none(), "nothing stored for db");
        // A file that names another identity (copied over) is refused.
        std::fs::copy(store.file(&web), store.file(&db)).expect("copy");
        assert!(restore(&store, &db).is_none());
        // One that is about to expire is not used.
        let (chain, key) = signed(&ca, &web, Duration::from_secs(30));
        store.save(&web, &chain, &key).expect("saved");
        assert!(restore(&store, &web).is_none());
        store.remove(&web);
        assert!(!store.file(&web).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
