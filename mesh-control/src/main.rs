//! `mesh-control`: the ferrymesh control plane. Watches Kubernetes (in-cluster, or
//! the kubeconfig in $KUBECONFIG / ~/.kube/config) or a directory of YAML files, and
//! serves the CA and config distribution to node agents on one TLS port.
//! `mesh-control ca init|issue` work on the CA's root files directly.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use mesh_control::{serve, source::dir::watch_dir};
use mesh_model::{
    ca::Ca,
    identity::{Identity, DEFAULT_TRUST_DOMAIN},
};

#[derive(Parser)]
#[command(
    name = "mesh-control",
    version,
    about = "ferrymesh control plane",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeFlags,
}

#[derive(Subcommand)]
enum Command {
    /// The CA's root files: create them, or issue a certificate from them directly.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Args)]
struct ServeFlags {
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
    /// Authenticate agents by TokenReview of their pod's bound ServiceAccount token
    /// (cluster mode: no token files are shared), for this ServiceAccount
    /// (namespace/name).
    #[arg(long)]
    token_review: Option<String>,
    /// The audience the agents' projected tokens are issued for.
    #[arg(long, default_value = "ferrymesh")]
    token_audience: String,
    /// The mesh's root namespace in cluster mode: AuthorizationPolicy,
    /// PeerAuthentication and RequestAuthentication there apply mesh-wide (Istio's
    /// `rootNamespace`). With --config-dir a MeshConfig object there decides.
    #[arg(long, default_value = mesh_model::model::DEFAULT_ROOT_NAMESPACE)]
    root_namespace: String,
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

#[derive(Subcommand)]
enum CaCommand {
    /// Create the root (root-cert.pem, root-key.pem) in DIR unless it exists.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue a key and certificate for an identity directly from the root.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// spiffe://<trust-domain>/ns/<ns>/sa/<sa>
        #[arg(long)]
        identity: String,
        #[arg(long)]
        cert_out: PathBuf,
        #[arg(long)]
        key_out: PathBuf,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Issue a certificate that expired an hour ago (for tests).
        #[arg(long)]
        expired: bool,
    },
}

async fn run(f: ServeFlags) -> Result<(), String> {
    let debounce = Duration::from_millis(f.debounce_ms.max(10));
    let current = match &f.config_dir {
        Some(dir) => {
            let current = watch_dir(dir.clone(), debounce)
                .map_err(|e| e.to_string())?
                .0;
            tracing::info!(dir = %dir.display(), "control plane: config loaded");
            current
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}; in a pod, check the ServiceAccount token; elsewhere, KUBECONFIG"))?;
            tracing::info!("watching Kubernetes");
            mesh_control::source::kube::watch_cluster(client, debounce, f.root_namespace.clone())
                .await
                .0
        }
    };
    let auth = match &f.token_review {
        None => mesh_control::node_auth::NodeAuth::Files(f.token_dir.clone()),
        Some(sa) => {
            let (ns, name) = sa.split_once('/').ok_or_else(|| {
                format!("--token-review {sa:?}: give namespace/name of the agents' ServiceAccount")
            })?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client for TokenReview: {e}"))?;
            mesh_control::node_auth::NodeAuth::TokenReview {
                client,
                audience: f.token_audience.clone(),
                username: format!("system:serviceaccount:{ns}:{name}"),
            }
        }
    };
    let args = serve::Args {
        admin: f.admin,
        ca_dir: f.ca_dir,
        trust_domain: f.trust_domain,
        listen: f.listen,
        auth,
    };
    tokio::select! {
        r = serve::serve(&args, current) => r.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn ca(cmd: CaCommand) -> Result<(), String> {
    match cmd {
        CaCommand::Init { dir, trust_domain } => {
            Ca::load_or_create(&dir, &trust_domain).map_err(|e| e.to_string())?;
            println!("root in {}", dir.display());
            Ok(())
        }
        CaCommand::Issue {
            dir,
            trust_domain,
            identity,
            cert_out,
            key_out,
            ttl_secs,
            expired,
        } => {
            let ca = Ca::load_or_create(&dir, &trust_domain).map_err(|e| e.to_string())?;
            let id: Identity = identity.parse().map_err(|e| format!("{e}"))?;
            let now = std::time::SystemTime::now();
            let hour = Duration::from_secs(3600);
            let (nb, na) = if expired {
                (now - 2 * hour, now - hour)
            } else {
                (
                    now - Duration::from_secs(60),
                    now + Duration::from_secs(ttl_secs),
                )
            };
            let (cert, key) = ca.issue(&id, nb, na).map_err(|e| e.to_string())?;
            let write = |p: &PathBuf, text: String| {
                std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
            };
            write(&cert_out, cert)?;
            write(&key_out, key)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Ca { command }) => ca(command),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))
            .and_then(|rt| rt.block_on(run(cli.serve))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-control: {e}");
            ExitCode::FAILURE
        }
    }
}
