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
    state::State,
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

/// Runs until `out` is closed.
pub async fn run(source: Source, compiler: Compiler, out: mpsc::Sender<Update>) {
    let mut view = scope::View::default();
    let mut backoff = mesh_infra::backoff::Backoff::reconnect();
    loop {
        match session(&source, &compiler, &mut view, &out, &mut backoff).await {
            Ok(()) => tracing::warn!("control plane ended the config stream; reconnecting"),
            Err(e) => tracing::warn!("config stream: {e}; keeping the last good config, retrying"),
        }
        if out.is_closed() {
            return;
        }
        backoff.wait().await;
    }
}

/// A version the view now holds, compiled; or why it was refused.
fn compile(
    compiler: &Compiler,
    view: &scope::View,
    decoded: Result<(), String>,
) -> Result<State, String> {
    decoded?;
    let objects = view.objects();
    config::validate_objects(ORIGIN, &objects).map_err(|e| e.to_string())?;
    compiler.compile(ORIGIN, objects).map_err(|e| e.to_string())
}

const ORIGIN: &str = "control-plane";

async fn session(
    source: &Source,
    compiler: &Compiler,
    view: &mut scope::View,
    out: &mpsc::Sender<Update>,
    backoff: &mut mesh_infra::backoff::Backoff,
) -> Result<(), Error> {
    let channel = source.endpoint.connect().await.map_err(Error::Connect)?;
    let mut client = ConfigDistributionClient::new(channel).max_decoding_message_size(16 << 20);
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
    // A version may come in several messages; it is applied once the last arrived.
    let mut decoded = Ok(());
    while let Some(u) = updates.message().await? {
        backoff.reset();
        // The view follows the control plane even when a version is refused, so
        // that later deltas apply to what it believes we hold.
        if let Err(e) = view.apply(&u) {
            decoded = decoded.and(Err(e.to_string()));
        }
        if u.more {
            continue;
        }
        let result = compile(compiler, view, std::mem::replace(&mut decoded, Ok(())));
        let (update, ack) = match result {
            Ok(state) => (Update::Apply(u.version, Box::new(state)), String::new()),
            Err(e) => (Update::Refused(u.version, e.clone()), e),
        };
        if out.send(update).await.is_err() {
            return Ok(());
        }
        let ack = AgentMessage {
            node: source.node.clone(),
            ack_version: u.version,
            nack_error: ack,
        };
        let _ = acks.send(ack).await;
    }
    Ok(())
}
