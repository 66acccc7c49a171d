//! The control plane's side: the current objects (a directory of YAML files,
//! reloaded when it changes; a bad change is refused and the last good version
//! stays), and one stream per node agent with its node-scoped snapshot and deltas.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use mesh_model::{
    config,
    model::Objects,
    proto::config::{config_distribution_server::ConfigDistribution, AgentMessage, ConfigUpdate},
    scope,
};

use crate::ca_service::authenticate_node;

pub type Current = watch::Receiver<(u64, Arc<Objects>)>;

/// What each node last acknowledged (for status and logs).
#[derive(Debug, Default, Clone, serde::Serialize)]
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
    token_dir: PathBuf,
    pub nodes: Nodes,
}

impl Distribution {
    pub fn new(current: Current, token_dir: &Path) -> Distribution {
        Distribution {
            current,
            token_dir: token_dir.to_owned(),
            nodes: Arc::default(),
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
        authenticate_node(&self.token_dir, &node, &metadata)?;
        tracing::info!(%node, "agent connected for config");
        let (tx, mut rx) = mpsc::channel::<Result<ConfigUpdate, Status>>(4);
        let mut current = self.current.clone();
        let nodes = self.nodes.clone();
        status(&nodes).entry(node.clone()).or_default().connected = true;
        let n = node.clone();
        tokio::spawn(async move {
            let mut sent: Option<scope::Set> = None;
            loop {
                let (version, objects) = current.borrow_and_update().clone();
                let set = scope::for_node(&objects, &n);
                let update = match &sent {
                    None => Some(scope::snapshot(version, &set)),
                    Some(old) => scope::delta(version, old, &set),
                };
                if let Some(u) = update {
                    tracing::debug!(node = %n, version, snapshot = u.snapshot, upserts = u.upserts.len(), deletes = u.deletes.len(), "config update sent");
                    if tx.send(Ok(u)).await.is_err() {
                        break;
                    }
                    status(&nodes).entry(n.clone()).or_default().sent_version = version;
                }
                sent = Some(set);
                tokio::select! {
                    r = current.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
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

fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.path(), m.modified().ok(), m.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A directory's objects, refused unless they compile as an agent would compile them.
fn load_checked(dir: &Path) -> Result<Objects, config::Error> {
    let objects = Arc::new(config::load_dir(dir)?);
    mesh_model::state::State::compile(0, objects.clone(), None)
        .map_err(|e| config::Error::invalid(&dir.display().to_string(), e))?;
    Ok(Arc::unwrap_or_clone(objects))
}

/// Watches a directory of YAML files: each good change is a new version.
pub fn watch_dir(
    dir: PathBuf,
    interval: Duration,
) -> Result<(Current, tokio::task::JoinHandle<()>), config::Error> {
    let first = load_checked(&dir)?;
    let (tx, rx) = watch::channel((1u64, Arc::new(first)));
    let task = tokio::spawn(async move {
        let mut seen = fingerprint(&dir);
        let mut version = 1;
        loop {
            tokio::time::sleep(interval).await;
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match load_checked(&dir) {
                Ok(o) => {
                    version += 1;
                    tracing::info!(version, "config changed");
                    if tx.send((version, Arc::new(o))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("config refused, agents keep version {version}: {e}"),
            }
        }
    });
    Ok((rx, task))
}
