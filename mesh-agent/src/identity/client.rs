//! The agent's side of the CA: a gRPC client authenticated by the node's token.
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use mesh_model::{
    ca::CA_SERVER_NAME,
    proto::ca::{certificates_client::CertificatesClient, SignRequest},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CA address {0:?} is not a valid URL (expected https://host:port)")]
    Address(String),
    #[error("CA TLS settings: {0}")]
    Tls(tonic::transport::Error),
    #[error("CA refused or failed the request: {0}")]
    Status(#[from] tonic::Status),
    #[error("bootstrap token is not a valid header value")]
    Token,
}

#[derive(Clone)]
pub struct CaClient {
    client: CertificatesClient<Channel>,
    node: String,
    token: String,
}

impl CaClient {
    /// A lazily connecting client: the CA may start after the agent.
    pub fn new(address: &str, root_pem: &str, node: &str, token: &str) -> Result<CaClient, Error> {
        let tls = ClientTlsConfig::new()
            .domain_name(CA_SERVER_NAME)
            .ca_certificate(Certificate::from_pem(root_pem));
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|_| Error::Address(address.to_owned()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .tls_config(tls)
            .map_err(Error::Tls)?;
        Ok(CaClient {
            client: CertificatesClient::new(endpoint.connect_lazy()),
            node: node.to_owned(),
            token: token.trim().to_owned(),
        })
    }

    /// Signs a CSR: (leaf chain PEM, root PEM).
    pub async fn sign(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> Result<(Vec<String>, String), Error> {
        let mut req = tonic::Request::new(SignRequest {
            node: self.node.clone(),
            csr_pem,
            ttl_seconds: ttl.as_secs().min(u64::from(u32::MAX)) as u32,
        });
        let value = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| Error::Token)?;
        req.metadata_mut().insert("authorization", value);
        let resp = self.client.clone().sign(req).await?.into_inner();
        Ok((resp.cert_chain_pem, resp.root_pem))
    }
}
