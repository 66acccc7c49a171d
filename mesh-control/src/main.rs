//! `mesh-control`: the ferrymesh control plane. Watches Kubernetes (in-cluster, or
//! the kubeconfig in $KUBECONFIG / ~/.kube/config) or a directory of YAML files, and
//! serves the CA and config distribution to node agents on one TLS port.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mesh_agent::{
    control::{self, server::watch_dir},
    identity::DEFAULT_TRUST_DOMAIN,
};

#[derive(Parser)]
#[command(name = "mesh-control", version, about = "ferrymesh control plane")]
struct Cli {
    /// The CA's directory (root created on first start, or put there).
    #[arg(long, default_value = "/var/lib/ferrymesh/ca")]
    ca_dir: PathBuf,
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    #[arg(long, default_value = "0.0.0.0:15012")]
    listen: SocketAddr,
    /// Directory with one file per node, named after it, holding its token.
    #[arg(long, default_value = "/etc/ferrymesh/tokens")]
    token_dir: PathBuf,
    /// Read config from this directory of YAML files instead of Kubernetes.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Admin API for meshctl (status, node config, pod check).
    #[arg(long, default_value = "127.0.0.1:15014")]
    admin: SocketAddr,
    /// Wait this long after a change before publishing a version (batches bursts).
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
}

async fn run(cli: Cli) -> Result<(), String> {
    let debounce = Duration::from_millis(cli.debounce_ms.max(10));
    let current = match &cli.config_dir {
        Some(dir) => {
            watch_dir(dir.clone(), debounce)
                .map_err(|e| e.to_string())?
                .0
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}; in a pod, check the ServiceAccount token; elsewhere, KUBECONFIG"))?;
            tracing::info!("watching Kubernetes");
            mesh_control::source::watch_cluster(client, debounce)
                .await
                .0
        }
    };
    let args = control::Args {
        admin: cli.admin,
        ca_dir: cli.ca_dir,
        trust_domain: cli.trust_domain,
        listen: cli.listen,
        config_dir: cli.config_dir.unwrap_or_default(),
        token_dir: cli.token_dir,
        reload_interval: debounce,
    };
    control::serve(&args, current)
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-control: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-control: {e}");
            ExitCode::FAILURE
        }
    }
}
