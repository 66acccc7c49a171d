//! What `mesh-agent run` is told, and where its certificates come from.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mesh_model::{ca::Ca, config};

use crate::{
    ebpf,
    identity::{
        client::CaClient,
        manager::{CertManager, Signer},
        store::CertStore,
    },
    source::control_plane as cp,
    tls,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("{0}")]
    Ebpf(#[from] ebpf::Error),
    #[error("cannot bind the admin endpoint {addr}: {source}; is another agent running?")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(String),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("config from the control plane needs --ca-address, --ca-root and --ca-token-file (it is served with the CA)")]
    ControlPlaneNeedsCa,
    #[error("{0}")]
    Control(#[from] cp::Error),
    #[error("{0}")]
    Traces(#[from] crate::telemetry::otlp::Error),
}

/// Where the agent's config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A local file, reloaded when it changes.
    File(PathBuf),
    /// The control plane's config stream (same address, root and token as the CA).
    ControlPlane,
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub config: ConfigSource,
    pub node: String,
    pub cgroup: PathBuf,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// bpffs directory for this node's pinned attachments.
    pub pin_dir: PathBuf,
    /// Where the last good config from the control plane is kept, and the handoff
    /// socket a successor connects to.
    pub state_dir: PathBuf,
    /// After handing over to a successor: how long established connections may
    /// take to end before this agent exits.
    pub drain: Duration,
    pub excluded_ports: Vec<u16>,
    pub reload_interval: Duration,
    pub worker_threads: usize,
    /// How access-log lines are written.
    pub access_log: crate::telemetry::access_log::AccessLogFormat,
    /// Where request spans are exported (OTLP), if anywhere.
    pub traces: Option<crate::telemetry::otlp::Export>,
    /// The loopback fast path between applications and the agent.
    pub fast_path: crate::ebpf::fast::Mode,
    /// How meshed destinations on other nodes are reached.
    pub tunnel: crate::datapath::Tunnel,
    pub identity: IdentityArgs,
    /// Operator overrides of the inbound connection caps.
    pub caps: CapFlags,
    /// Trust roots for jwksUri servers (None: the system bundle).
    pub jwks_ca: Option<PathBuf>,
    /// Where pods' network namespaces are found when the config has none.
    pub netns_places: crate::inpod::discover::Places,
}

/// Connection caps given on the command line (None: the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct CapFlags {
    pub connections: Option<usize>,
    pub per_peer: Option<usize>,
}

impl CapFlags {
    /// The limits of this process (after its open-file limit was raised).
    pub fn limits(self) -> crate::guard::Limits {
        let mut l = crate::guard::Limits::for_this_process();
        if let Some(n) = self.connections {
            l.connections = n.max(1);
            l.connections_per_peer = (n / 4).max(1);
        }
        if let Some(n) = self.per_peer {
            l.connections_per_peer = n.max(1);
        }
        l
    }
}

/// Where certificates come from.
#[derive(Debug, Clone)]
pub struct IdentityArgs {
    pub trust_domain: String,
    /// The cluster's name in Istio's metric labels.
    pub cluster_id: String,
    pub cert_ttl: Duration,
    pub ca: CaSource,
}

#[derive(Debug, Clone)]
pub enum CaSource {
    /// An in-process CA with its root in this directory (single node).
    Local { dir: PathBuf },
    /// The CA service: address, trust bundle file, this node's bootstrap token file.
    Remote {
        address: String,
        root: PathBuf,
        token: PathBuf,
    },
}

/// The node's certificate manager. With the CA service, certificates are kept in
/// `state_dir` so that a restart during a CA outage still serves mTLS.
pub(crate) fn cert_manager(
    node: &str,
    args: &IdentityArgs,
    state_dir: Option<&std::path::Path>,
) -> Result<(CertManager, Arc<rustls::RootCertStore>), Error> {
    match &args.ca {
        CaSource::Local { dir } => {
            let ca = Arc::new(
                Ca::load_or_create(dir, &args.trust_domain)
                    .map_err(|e| Error::Identity(e.to_string()))?,
            );
            let roots =
                tls::roots_from_pem(ca.root_pem()).map_err(|e| Error::Identity(e.to_string()))?;
            Ok((CertManager::new(Signer::Local(ca), args.cert_ttl), roots))
        }
        CaSource::Remote {
            address,
            root,
            token,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
            };
            let root_pem = read(root)?;
            let token = read(token)?;
            let roots =
                tls::roots_from_pem(&root_pem).map_err(|e| Error::Identity(e.to_string()))?;
            let client = CaClient::new(address, &root_pem, node, &token)
                .map_err(|e| Error::Identity(e.to_string()))?;
            Ok((
                match state_dir {
                    Some(dir) => CertManager::new(Signer::Remote(Box::new(client)), args.cert_ttl)
                        .with_store(CertStore::new(dir)),
                    None => CertManager::new(Signer::Remote(Box::new(client)), args.cert_ttl),
                },
                roots,
            ))
        }
    }
}
