//! Config distribution. The control plane (`mesh-agent control`) holds the cluster's
//! objects (from a directory of YAML files here; Kubernetes watchers later), and
//! streams to each node agent the objects its node needs: a snapshot, then versioned
//! deltas, over gRPC (`proto/config.proto`) on the CA's TLS port. Agents acknowledge
//! each version, refuse a bad one with the reason (keeping their last good config),
//! and reconnect with backoff, keeping their config meanwhile.
//!
//! `scope` decides (pure, table-tested) what a node gets and the delta between two
//! sets; `server` and `client` do the streaming.
pub mod admin;
pub mod client;
pub mod scope;
pub mod server;

pub mod proto {
    tonic::include_proto!("ferrymesh.config.v1");
}

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] crate::config::Error),
    #[error("{0}")]
    Ca(#[from] crate::identity::ca::Error),
    #[error("{0}")]
    Serve(#[from] crate::identity::service::Error),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot serve the admin API on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts the admin API (status, node config, pod check) in the background.
pub async fn serve_admin(
    addr: SocketAddr,
    current: server::Current,
    nodes: Arc<std::sync::Mutex<std::collections::BTreeMap<String, server::NodeStatus>>>,
    trust_domain: &str,
) -> Result<(), Error> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Admin { addr, source })?;
    tokio::spawn(admin::serve(
        l,
        Arc::new(admin::Admin {
            current,
            nodes,
            trust_domain: trust_domain.to_owned(),
        }),
    ));
    Ok(())
}

pub struct Args {
    /// The admin API (`meshctl`); keep it on localhost or a protected network.
    pub admin: SocketAddr,
    pub ca_dir: PathBuf,
    pub trust_domain: String,
    pub listen: SocketAddr,
    pub config_dir: PathBuf,
    pub token_dir: PathBuf,
    pub reload_interval: Duration,
}

/// `mesh-agent control`: the CA and config distribution on one TLS port.
pub fn run(args: Args) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async move {
        // A first good config is required; later bad ones are refused.
        let (current, _watcher) = server::watch_dir(args.config_dir.clone(), args.reload_interval)?;
        tracing::info!(dir = %args.config_dir.display(), "control plane: config loaded");
        serve(&args, current).await
    })
}

/// The control plane on a config source: the CA (its inventory is the live
/// config), config distribution on the same TLS port, and the admin API. Used by
/// `mesh-agent control` (directory) and `mesh-control` (Kubernetes or directory).
pub async fn serve(args: &Args, current: server::Current) -> Result<(), Error> {
    let ca = Arc::new(crate::identity::ca::Ca::load_or_create(
        &args.ca_dir,
        &args.trust_domain,
    )?);
    let distribution = server::Distribution::new(current.clone(), &args.token_dir);
    serve_admin(
        args.admin,
        current.clone(),
        distribution.nodes.clone(),
        &args.trust_domain,
    )
    .await?;
    crate::identity::service::serve_with(
        ca,
        args.listen,
        crate::identity::service::Inventory::Live(current),
        &args.token_dir,
        Some(distribution),
    )
    .await?;
    Ok(())
}
