//! Config distribution, the control plane's side: one stream per node agent with
//! its node-scoped snapshot and deltas (`mesh_model::scope`), and what each agent
//! acknowledged or refused.
use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use mesh_model::{
    proto::config::{config_distribution_server::ConfigDistribution, AgentMessage, ConfigUpdate},
    scope,
};

use crate::node_auth::NodeAuth;

pub use crate::source::Current;

/// What each node last acknowledged (for status and logs).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub connected: bool,
    pub sent_version: u64,
    pub acked_version: u64,
    pub last_error: Option<String>,
}

/// Every node's status, by node name.
pub type Nodes = Arc<Mutex<BTreeMap<String, NodeStatus>>>;

#[derive(Clone)]
pub struct Distribution {
    current: Current,
    auth: NodeAuth,
    pub nodes: Nodes,
    /// Objects' JSON, made once for all nodes while they do not change.
    encoder: Arc<Mutex<scope::Encoder>>,
}

impl Distribution {
    pub fn new(current: Current, auth: NodeAuth) -> Distribution {
        Distribution {
            current,
            auth,
            nodes: Arc::default(),
            encoder: Arc::default(),
        }
    }

    /// Streams `node`'s snapshot, then a delta for every version, until the agent
    /// goes away.
    async fn stream(self, node: String, tx: mpsc::Sender<Result<ConfigUpdate, Status>>) {
        let mut current = self.current.clone();
        let mut sent: Option<scope::Set> = None;
        loop {
            let p = current.borrow_and_update().clone();
            let (version, objects) = (p.version, p.objects);
            let set = self
                .encoder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .for_node(version, &objects, &node);
            let msgs = scope::updates(version, sent.as_ref(), &set, scope::MAX_MESSAGE_BYTES);
            tracing::debug!(%node, version, messages = msgs.len(), "config update");
            for u in msgs {
                if tx.send(Ok(u)).await.is_err() {
                    return;
                }
                status(&self.nodes)
                    .entry(node.clone())
                    .or_default()
                    .sent_version = version;
            }
            sent = Some(set);
            tokio::select! {
                r = current.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    }
}

fn status<'a>(
    nodes: &'a Mutex<BTreeMap<String, NodeStatus>>,
) -> std::sync::MutexGuard<'a, BTreeMap<String, NodeStatus>> {
    nodes.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl ConfigDistribution for Distribution {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        // A client that never says who it is does not hold a stream open.
        let hello = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no first message naming the node within 10 s")
            })??
            .ok_or_else(|| Status::invalid_argument("the first message must name the node"))?;
        let node = hello.node;
        self.auth.check(&node, &metadata).await?;
        tracing::info!(%node, "agent connected for config");
        let (tx, mut rx) = mpsc::channel::<Result<ConfigUpdate, Status>>(4);
        let nodes = self.nodes.clone();
        status(&nodes).entry(node.clone()).or_default().connected = true;
        let (me, n) = (self.clone(), node.clone());
        tokio::spawn(async move {
            me.stream(n.clone(), tx).await;
            status(&nodes).entry(n.clone()).or_default().connected = false;
            tracing::info!(node = %n, "agent config stream ended");
        });
        let nodes = self.nodes.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let mut s = status(&nodes);
                let e = s.entry(node.clone()).or_default();
                if m.nack_error.is_empty() {
                    e.acked_version = m.ack_version;
                    e.last_error = None;
                } else {
                    tracing::warn!(%node, version = m.ack_version, "agent refused config: {}", m.nack_error);
                    e.last_error = Some(m.nack_error);
                }
            }
        });
        let out = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(out)))
    }
}
