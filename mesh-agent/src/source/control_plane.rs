//! The agent's side: one stream to the control plane; every update applied to the
//! control plane's view of this node, parsed and validated as a local file would be,
//! then handed to the agent (or refused with the reason; the last good config stays).
//! Reconnects with backoff; a new stream starts with a snapshot.
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use mesh_model::{
    ca::CA_SERVER_NAME,
    config,
    proto::config::{config_distribution_client::ConfigDistributionClient, AgentMessage},
    scope,
};

use super::{Compiler, Update};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane address {0:?} is not a valid URL (expected https://host:port)")]
    Address(String),
    #[error("control plane TLS settings: {0}")]
    Tls(tonic::transport::Error),
    #[error("connecting to the control plane: {0}")]
    Connect(tonic::transport::Error),
    #[error("control plane: {0}")]
    Status(#[from] tonic::Status),
    #[error("bootstrap token is not a valid header value")]
    Token,
}

pub struct Source {
    pub endpoint: Endpoint,
    pub node: String,
    pub token: String,
}

impl Source {
    pub fn new(address: &str, root_pem: &str, node: &str, token: &str) -> Result<Source, Error> {
        let tls = ClientTlsConfig::new()
            .domain_name(CA_SERVER_NAME)
            .ca_certificate(Certificate::from_pem(root_pem));
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|_| Error::Address(address.to_owned()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .tls_config(tls)
            .map_err(Error::Tls)?;
        Ok(Source {
            endpoint,
            node: node.to_owned(),
            token: token.trim().to_owned(),
        })
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Runs until `out` is closed.
pub async fn run(source: Source, compiler: Compiler, out: mpsc::Sender<Update>) {
    let mut view = scope::Set::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        match session(&source, &compiler, &mut view, &out, &mut backoff).await {
            Ok(()) => tracing::warn!("control plane ended the config stream; reconnecting"),
            Err(e) => tracing::warn!(
                "config stream: {e}; keeping the last good config, retrying in ~{backoff:?}"
            ),
        }
        if out.is_closed() {
            return;
        }
        let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(
    source: &Source,
    compiler: &Compiler,
    view: &mut scope::Set,
    out: &mpsc::Sender<Update>,
    backoff: &mut Duration,
) -> Result<(), Error> {
    let channel = source.endpoint.connect().await.map_err(Error::Connect)?;
    let mut client = ConfigDistributionClient::new(channel);
    let (acks, mut acks_rx) = mpsc::channel::<AgentMessage>(8);
    let hello = AgentMessage {
        node: source.node.clone(),
        ack_version: 0,
        nack_error: String::new(),
    };
    let _ = acks.send(hello).await;
    let outbound = futures_util::stream::poll_fn(move |cx| acks_rx.poll_recv(cx));
    let mut req = tonic::Request::new(outbound);
    let value = format!("Bearer {}", source.token)
        .parse()
        .map_err(|_| Error::Token)?;
    req.metadata_mut().insert("authorization", value);
    let mut updates = client.watch(req).await?.into_inner();
    while let Some(u) = updates.message().await? {
        *backoff = BACKOFF_MIN;
        // The view follows the control plane even when a version is refused, so
        // that later deltas apply to what it believes we hold.
        scope::apply(view, &u);
        let compiled = config::parse("control-plane", &scope::to_text(view))
            .and_then(|objects| compiler.compile("control-plane", objects));
        let (update, ack) = match compiled {
            Ok(state) => (Update::Apply(u.version, Box::new(state)), String::new()),
            Err(e) => (Update::Refused(u.version, e.to_string()), e.to_string()),
        };
        if out.send(update).await.is_err() {
            return Ok(());
        }
        let _ = acks
            .send(AgentMessage {
                node: source.node.clone(),
                ack_version: u.version,
                nack_error: ack,
            })
            .await;
    }
    Ok(())
}
