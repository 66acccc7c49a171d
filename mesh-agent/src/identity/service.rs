//! The CA as a gRPC service: authenticates the calling node by its bootstrap token
//! and signs only identities that have a workload on that node.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tonic::{Request, Response, Status};

use super::{
    ca::Ca,
    proto::{
        certificates_server::{Certificates, CertificatesServer},
        SignRequest, SignResponse,
    },
    Identity,
};
use crate::{config, model::Objects};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ca(#[from] super::ca::Error),
    #[error("CA server TLS: {0}")]
    Tls(String),
    #[error("CA server on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

/// DNS name in the CA's serving certificate; clients verify it against the root.
pub const CA_SERVER_NAME: &str = "ferrymesh-ca";

/// Which workloads run where: the same config file the agents read, reloaded when
/// it changes; a bad file keeps the last good one.
/// Which workloads run where: from a config file (standalone CA) or from the control
/// plane's current objects.
pub enum Inventory {
    File {
        path: PathBuf,
        cached: Mutex<(Option<SystemTime>, Arc<Objects>)>,
    },
    Live(tokio::sync::watch::Receiver<(u64, Arc<Objects>)>),
}

impl Inventory {
    pub fn file(path: &Path) -> Inventory {
        Inventory::File {
            path: path.to_owned(),
            cached: Mutex::new((None, Arc::new(Objects::default()))),
        }
    }

    fn objects(&self) -> Arc<Objects> {
        let (path, cached) = match self {
            Inventory::Live(rx) => return rx.borrow().1.clone(),
            Inventory::File { path, cached } => (path, cached),
        };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut c = cached.lock().unwrap_or_else(|p| p.into_inner());
        if mtime != c.0 {
            match config::load(path) {
                Ok(o) => *c = (mtime, Arc::new(o)),
                Err(e) => tracing::warn!("CA inventory: {e}; keeping the last good one"),
            }
        }
        c.1.clone()
    }

    fn has_workload(&self, node: &str, id: &Identity) -> bool {
        self.objects().workloads.iter().any(|w| {
            w.spec.node == node
                && w.metadata.namespace() == id.namespace
                && w.spec.service_account == id.service_account
        })
    }
}

pub struct CaService {
    ca: Arc<Ca>,
    inventory: Inventory,
    token_dir: PathBuf,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a node's bootstrap token (metadata `authorization: Bearer <token>`) against
/// `<token_dir>/<node>`.
pub fn authenticate_node(
    token_dir: &Path,
    node: &str,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<(), Status> {
    {
        if node.is_empty() || node.contains('/') || node.starts_with('.') {
            return Err(Status::invalid_argument(
                "node name is empty or not a plain name",
            ));
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing bootstrap token (authorization: Bearer <token>)")
            })?;
        let expected = std::fs::read_to_string(token_dir.join(node)).map_err(|_| {
            Status::unauthenticated(format!("no bootstrap token is registered for node {node}"))
        })?;
        if !constant_time_eq(expected.trim().as_bytes(), presented.trim().as_bytes()) {
            return Err(Status::unauthenticated(format!(
                "wrong bootstrap token for node {node}"
            )));
        }
        Ok(())
    }
}

impl CaService {
    pub fn new(ca: Arc<Ca>, inventory: Inventory, token_dir: &Path) -> CaService {
        CaService {
            ca,
            inventory,
            token_dir: token_dir.to_owned(),
        }
    }

    fn authenticate(
        &self,
        node: &str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        authenticate_node(&self.token_dir, node, metadata)
    }
}

#[tonic::async_trait]
impl Certificates for CaService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let node = request.get_ref().node.clone();
        self.authenticate(&node, request.metadata())?;
        let req = request.into_inner();
        let (identity, csr) = self
            .ca
            .csr_identity(&req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !self.inventory.has_workload(&node, &identity) {
            tracing::warn!(%node, %identity, "refused a CSR: no workload with this identity runs on the node");
            return Err(Status::permission_denied(format!(
                "identity {identity} has no workload on node {node}"
            )));
        }
        let ttl = Duration::from_secs(u64::from(req.ttl_seconds.max(2)));
        let leaf = self
            .ca
            .sign(&csr, &identity, ttl)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(%node, %identity, ttl_s = ttl.as_secs(), "signed");
        Ok(Response::new(SignResponse {
            cert_chain_pem: vec![leaf],
            root_pem: self.ca.root_pem().to_owned(),
        }))
    }
}

/// Serves the CA over TLS (its serving certificate is signed by its own root).
pub async fn serve(
    ca: Arc<Ca>,
    listen: SocketAddr,
    config: &Path,
    token_dir: &Path,
) -> Result<(), Error> {
    serve_with(ca, listen, Inventory::file(config), token_dir, None).await
}

/// The CA, and when given the config distribution service, on one TLS port.
pub async fn serve_with(
    ca: Arc<Ca>,
    listen: SocketAddr,
    inventory: Inventory,
    token_dir: &Path,
    distribution: Option<crate::control::server::Distribution>,
) -> Result<(), Error> {
    let (cert, key) = ca
        .issue_server(CA_SERVER_NAME)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let svc = CaService::new(ca, inventory, token_dir);
    tracing::info!(%listen, config_distribution = distribution.is_some(), "CA serving");
    tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| Error::Tls(e.to_string()))?
        .add_service(CertificatesServer::new(svc))
        .add_optional_service(
            distribution.map(
                crate::control::proto::config_distribution_server::ConfigDistributionServer::new,
            ),
        )
        .serve(listen)
        .await
        .map_err(|source| Error::Serve {
            addr: listen,
            source,
        })
}
