//! The control plane on a config source: the CA (its inventory is the live config),
//! config distribution on the same TLS port, and the admin API for meshctl.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use crate::{admin, ca_service, distribution};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] mesh_model::config::Error),
    #[error("{0}")]
    Ca(#[from] mesh_model::ca::Error),
    #[error("{0}")]
    Serve(#[from] ca_service::Error),
    #[error("cannot serve the admin API on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Args {
    /// The admin API (`meshctl`); keep it on localhost or a protected network.
    pub admin: SocketAddr,
    pub ca_dir: PathBuf,
    pub trust_domain: String,
    pub listen: SocketAddr,
    /// How agents prove their node.
    pub auth: crate::node_auth::NodeAuth,
}

/// Starts the admin API (status, node config, pod check) in the background.
async fn serve_admin(
    addr: SocketAddr,
    current: distribution::Current,
    nodes: distribution::Nodes,
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

/// Serves until the CA server fails.
pub async fn serve(args: &Args, current: distribution::Current) -> Result<(), Error> {
    let ca = Arc::new(mesh_model::ca::Ca::load_or_create(
        &args.ca_dir,
        &args.trust_domain,
    )?);
    let distribution = distribution::Distribution::new(current.clone(), args.auth.clone());
    serve_admin(
        args.admin,
        current.clone(),
        distribution.nodes.clone(),
        &args.trust_domain,
    )
    .await?;
    ca_service::serve(
        ca,
        args.listen,
        ca_service::Inventory(current),
        args.auth.clone(),
        distribution,
    )
    .await?;
    Ok(())
}
