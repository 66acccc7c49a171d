//! The CA as a gRPC service: authenticates the calling node (`node_auth`: its
//! bootstrap token, or a TokenReview of its agent's bound ServiceAccount token) and
//! signs only identities that have a workload on that node.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use mesh_model::{
    ca::Ca,
    identity::Identity,
    proto::{
        ca::{
            certificates_server::{Certificates, CertificatesServer},
            SignRequest, SignResponse,
        },
        config::config_distribution_server::ConfigDistributionServer,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ca(#[from] mesh_model::ca::Error),
    #[error("CA server TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}; is another control plane running?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("CA server on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

use mesh_model::ca::CA_SERVER_NAME;

/// Which workloads run where: the control plane's current objects.
pub struct Inventory(pub crate::source::Current);

impl Inventory {
    fn has_workload(&self, node: &str, id: &Identity) -> bool {
        self.0.borrow().objects.workloads.iter().any(|w| {
            w.spec.node == node
                && w.metadata.namespace() == id.namespace
                && w.spec.service_account == id.service_account
        })
    }
}

pub struct CaService {
    ca: Arc<Ca>,
    inventory: Inventory,
    auth: crate::node_auth::NodeAuth,
}

impl CaService {
    pub fn new(ca: Arc<Ca>, inventory: Inventory, auth: crate::node_auth::NodeAuth) -> CaService {
        CaService {
            ca,
            inventory,
            auth,
        }
    }

    async fn authenticate(
        &self,
        node: &str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        self.auth.check(node, metadata).await
    }
}

#[tonic::async_trait]
impl Certificates for CaService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let node = request.get_ref().node.clone();
        self.authenticate(&node, request.metadata()).await?;
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

/// The CA and config distribution on one TLS port (its serving certificate is
/// signed by its own root).
pub async fn serve(
    ca: Arc<Ca>,
    listen: SocketAddr,
    inventory: Inventory,
    auth: crate::node_auth::NodeAuth,
    distribution: crate::distribution::Distribution,
) -> Result<(), Error> {
    let (cert, key) = ca
        .issue_server(CA_SERVER_NAME)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let acceptor =
        crate::control_tls::acceptor(&cert, &key).map_err(|e| Error::Tls(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let svc = CaService::new(ca, inventory, auth);
    tracing::info!(%listen, "CA and config distribution serving (TLS 1.3 only)");
    tonic::transport::Server::builder()
        .add_service(CertificatesServer::new(svc))
        .add_service(ConfigDistributionServer::new(distribution))
        .serve_with_incoming(crate::control_tls::incoming(listener, acceptor))
        .await
        .map_err(|source| Error::Serve {
            addr: listen,
            source,
        })
}
