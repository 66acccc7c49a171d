//! `mesh-agent`: the ferrymesh node agent, the standalone waypoint, and tools that
//! act as a node would (an HBONE probe, a certificate request).
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use mesh_agent::{app, identity, probe};
use mesh_model::identity::{Identity, DEFAULT_TRUST_DOMAIN};

#[derive(Parser)]
#[command(name = "mesh-agent", version, about = "ferrymesh node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: attach the capture programs, enrol local pods, proxy.
    Run(RunFlags),
    /// Ask the CA for a certificate as this node's agent would; prints the outcome
    /// (for operators and tests: is the node's token good, is the identity on it?).
    RequestCert(RequestCertFlags),
    /// The L7 waypoint as a process of its own: a shared waypoint (--hbone) and/or
    /// an ingress API gateway (--gateway with --http/--https).
    Waypoint(WaypointFlags),
    /// Open one HBONE stream with given certificates and report what happened
    /// (for operators and tests: run it inside a pod's network namespace).
    HboneProbe(probe::ProbeArgs),
    /// Remove capture from this node: every eBPF attachment and map the agents
    /// pinned. A stopped agent leaves its pods captured (they fail closed); this is
    /// the way out (after `helm uninstall`, or to debug a node without the mesh).
    Uninstall(UninstallFlags),
    /// Put ferrymesh-cni into this node's CNI config (the DaemonSet's init
    /// container): new pods are then held until the agent has taken them.
    CniInstall(CniInstallFlags),
}

#[derive(Args)]
struct CniInstallFlags {
    /// The node's CNI network config directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The node's CNI plugin binary directory.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The plugin binary to copy there.
    #[arg(long, default_value = "/usr/local/bin/ferrymesh-cni")]
    plugin: PathBuf,
    /// The agent's CNI socket (<state dir>/cni.sock on the node).
    #[arg(long)]
    agent_socket: String,
    /// Take the plugin out of the chain instead.
    #[arg(long)]
    remove: bool,
}

fn cni_install(f: CniInstallFlags) -> Result<(), String> {
    let changed = mesh_agent::cni_install::run(
        &f.cni_conf_dir,
        &f.cni_bin_dir,
        &f.plugin,
        &f.agent_socket,
        f.remove,
    )
    .map_err(|e| e.to_string())?;
    let what = if f.remove {
        "removed from"
    } else {
        "chained into"
    };
    tracing::info!(config = %changed.display(), "ferrymesh-cni {what} the node's CNI config");
    Ok(())
}

#[derive(Args)]
struct UninstallFlags {
    /// The node's name (the default pin directory is /sys/fs/bpf/ferrymesh/<node>).
    #[arg(long, default_value = "")]
    node: String,
    /// The agents' bpffs directory, as given to `run --pin-dir`.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
}

fn uninstall(f: UninstallFlags) -> Result<(), String> {
    let pin_dir = match (f.pin_dir, f.node.as_str()) {
        (Some(d), _) => d,
        (None, "") => return Err("give --node or --pin-dir".into()),
        (None, node) => PathBuf::from("/sys/fs/bpf/ferrymesh").join(node),
    };
    match mesh_agent::ebpf::uninstall(&pin_dir) {
        Ok(true) => {
            tracing::info!(pin_dir = %pin_dir.display(), "capture removed: pods on this node are no longer in the mesh");
            Ok(())
        }
        Ok(false) => {
            tracing::info!(pin_dir = %pin_dir.display(), "nothing pinned here: no capture to remove");
            Ok(())
        }
        Err(e) => Err(format!("removing {}: {e}", pin_dir.display())),
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
struct RunFlags {
    /// YAML file of Kubernetes-shaped objects; reloaded when it changes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Take the config from the control plane's stream instead (at --ca-address,
    /// authenticated with --ca-token-file, trusted with --ca-root).
    #[arg(long, requires_all = ["ca_address", "ca_root", "ca_token_file"])]
    control_plane: bool,
    /// Name of this node (workloads with spec.node equal to it are local).
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// cgroup v2 directory whose sockets are captured (default: the cgroup v2 root).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Admin endpoint (stats, readiness, config dump).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Prometheus metrics (/metrics) and readiness (/healthz/ready).
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics: SocketAddr,
    /// bpffs directory where the agent pins its attachments, so that enrolled pods
    /// fail closed if the agent stops (default: /sys/fs/bpf/ferrymesh/<node>).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Where the last good config from the control plane is kept, to restart from
    /// it while the control plane is unreachable (default: /var/lib/ferrymesh/<node>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// After handing its pods to a new agent on the node (an upgrade): how long
    /// established connections may take to end before this agent exits (keep it
    /// below the pod's terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 25)]
    drain_seconds: u64,
    /// Where pods' network namespaces are pinned, for pods whose config has no
    /// spec.netns (cluster mode); repeat for several.
    #[arg(long, default_values = ["/var/run/netns", "/run/netns"])]
    netns_dir: Vec<PathBuf>,
    /// Do not look for pods' network namespaces under /proc.
    #[arg(long)]
    no_proc_netns: bool,
    /// Destination ports never captured outbound (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    exclude_port: Vec<u16>,
    /// After the config file changes (inotify), wait this long for more changes
    /// before reloading, in milliseconds.
    #[arg(long, default_value_t = 20)]
    reload_ms: u64,
    /// Access-log lines: `json` (one object per line) or `text` (key=value).
    #[arg(long, value_enum, default_value = "json")]
    access_log_format: mesh_agent::telemetry::access_log::Encoding,
    /// Access-log fields to write, in this order (comma-separated; default: all
    /// a line has). Fields: see README "Access log".
    #[arg(long, value_delimiter = ',')]
    access_log_fields: Vec<String>,
    /// Data-path threads.
    #[arg(long, env = "FERRYMESH_WORKER_THREADS", default_value_t = 2)]
    worker_threads: usize,
    /// The loopback fast path (sockops + sk_msg), experimental: messages between
    /// applications and the agent skip the loopback TCP stack. `annotated`: pods
    /// annotated `ferrymesh.io/fast-path: "true"`; `all`; `off` (the default: the
    /// kernel gives redirected messages no backpressure and can answer EAGAIN to a
    /// blocking read, see README).
    #[arg(long, value_enum, default_value_t = mesh_agent::ebpf::fast::Mode::Off)]
    fast_path: mesh_agent::ebpf::fast::Mode,
    /// How meshed destinations on other nodes are reached: `hbone` (mutual TLS) or
    /// `plaintext` (for measurements and debugging only).
    #[arg(long, env = "FERRYMESH_TUNNEL", default_value = "hbone", value_parser = ["hbone", "plaintext"])]
    tunnel: String,
    /// Concurrent inbound connections accepted (all pods); default: a third of the
    /// open-file limit. Counted in ferrymesh_hostile_refused_total.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Of which from one peer address (default: a quarter of --max-connections).
    #[arg(long)]
    max_connections_per_peer: Option<usize>,
    /// Directory whose files RequestAuthentication `jwksFile` may name (plain file
    /// names, regular files up to 64 KiB). Without it jwksFile is refused: a path
    /// in a tenant's object would be read on every node.
    #[arg(long)]
    jwks_dir: Option<PathBuf>,
    /// Trust roots (PEM) for the HTTPS servers RequestAuthentication `jwksUri` names;
    /// default: the system bundle (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    jwks_ca: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityFlags,
    #[command(flatten)]
    traces: TraceFlags,
}

#[derive(Args)]
struct TraceFlags {
    /// Export a span per request at the waypoint to this OTLP gRPC collector
    /// (http://host:port, e.g. an OpenTelemetry Collector on 4317); off when unset
    /// or empty.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Percent of new traces sampled (a caller's traceparent decision is kept), as
    /// Istio's `tracing.sampling` (default 1).
    #[arg(long, default_value_t = 1.0)]
    trace_sampling: f64,
}

impl TraceFlags {
    fn export(
        self,
        resource: Vec<(&'static str, String)>,
    ) -> Option<mesh_agent::telemetry::otlp::Export> {
        Some(mesh_agent::telemetry::otlp::Export {
            endpoint: self.otlp_endpoint.filter(|e| !e.is_empty())?,
            sampling_percent: self.trace_sampling,
            resource,
        })
    }
}

#[derive(Args)]
struct IdentityFlags {
    /// SPIFFE trust domain.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The cluster's name in Istio's metric labels (`source_cluster`,
    /// `destination_cluster`), as Istio's `--clusterID`.
    #[arg(long, env = "FERRYMESH_CLUSTER_ID", default_value = mesh_agent::telemetry::DEFAULT_CLUSTER)]
    cluster_id: String,
    /// Lifetime asked for workload certificates; renewed at half-life.
    #[arg(long, default_value_t = 86400)]
    cert_ttl_secs: u64,
    /// CA service address (https://host:port). Without it the agent runs its own CA
    /// with the root in --local-ca-dir (single node).
    #[arg(long, requires_all = ["ca_root", "ca_token_file"])]
    ca_address: Option<String>,
    /// Trust bundle (the CA's root certificate, PEM).
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// This node's bootstrap token for the CA.
    #[arg(long)]
    ca_token_file: Option<PathBuf>,
    /// Root of the in-process CA (created on first start).
    #[arg(long, default_value = "/var/lib/ferrymesh/ca")]
    local_ca_dir: PathBuf,
}

impl IdentityFlags {
    fn into_args(self) -> app::IdentityArgs {
        let ca = match (self.ca_address, self.ca_root, self.ca_token_file) {
            (Some(address), Some(root), Some(token)) => app::CaSource::Remote {
                address,
                root,
                token,
            },
            _ => app::CaSource::Local {
                dir: self.local_ca_dir,
            },
        };
        app::IdentityArgs {
            trust_domain: self.trust_domain,
            cluster_id: self.cluster_id,
            cert_ttl: Duration::from_secs(self.cert_ttl_secs.max(2)),
            ca,
        }
    }
}

#[derive(Args)]
struct WaypointFlags {
    /// YAML file of Kubernetes-shaped objects; reloaded when it changes.
    #[arg(long)]
    config: PathBuf,
    /// Directory whose files RequestAuthentication `jwksFile` may name (plain file
    /// names, regular files up to 64 KiB). Without it jwksFile is refused: a path
    /// in a tenant's object would be read on every node.
    #[arg(long)]
    jwks_dir: Option<PathBuf>,
    /// Node the waypoint runs on (its CA token is this node's).
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// namespace/name of the waypoint's own Workload (its identity and addresses).
    #[arg(long)]
    workload: String,
    /// Serve HBONE on 15008 as the shared waypoint of Services labelled
    /// ferrymesh.io/use-waypoint: <workload name>.
    #[arg(long)]
    hbone: bool,
    /// Act as this Gateway (namespace/name): routes whose parentRef is it apply.
    #[arg(long)]
    gateway: Option<String>,
    /// Proxies in front of the gateway whose X-Forwarded-For entries are trusted
    /// (Istio's numTrustedProxies): the client address policy sees
    /// (`remoteIpBlocks`, `remote.ip`) is the Nth entry from the right; 0 (the
    /// default): the peer's address.
    #[arg(long, default_value_t = 0)]
    trusted_proxies: u8,
    /// Plain HTTP listener for clients outside the mesh (e.g. [::]:8000).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// TLS listener for clients outside the mesh (e.g. [::]:8443).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    https: Option<SocketAddr>,
    /// Edge certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Edge private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Metrics, readiness and stats.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics: SocketAddr,
    /// After the config file changes, wait this long for more changes (ms).
    #[arg(long, default_value_t = 20)]
    reload_ms: u64,
    #[arg(long, env = "FERRYMESH_WORKER_THREADS", default_value_t = 2)]
    worker_threads: usize,
    #[command(flatten)]
    identity: IdentityFlags,
    #[command(flatten)]
    traces: TraceFlags,
}

#[derive(Args)]
struct RequestCertFlags {
    /// https://host:port
    #[arg(long)]
    address: String,
    /// The CA's root certificate (PEM).
    #[arg(long)]
    root: PathBuf,
    #[arg(long, env = "NODE_NAME")]
    node: String,
    #[arg(long)]
    token_file: PathBuf,
    /// spiffe://<trust-domain>/ns/<ns>/sa/<sa>
    #[arg(long)]
    identity: String,
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The access-log format from its flags; an unknown field is refused at start.
fn access_log(
    encoding: mesh_agent::telemetry::access_log::Encoding,
    fields: &[String],
) -> Result<mesh_agent::telemetry::access_log::AccessLogFormat, String> {
    mesh_agent::telemetry::access_log::AccessLogFormat::new(encoding, fields)
        .map_err(|e| format!("--access-log-fields: {e}"))
}

fn run(f: RunFlags) -> Result<(), String> {
    if let Some(d) = &f.jwks_dir {
        mesh_model::l7::jwks_file::allow_in(d.clone());
    }
    let cgroup = f
        .cgroup
        .or_else(cgroup2_root)
        .ok_or("no cgroup v2 mount found; mount cgroup2 or pass --cgroup")?;
    let pin_dir = f
        .pin_dir
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/ferrymesh").join(&f.node));
    let state_dir = f
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/ferrymesh").join(&f.node));
    app::run(app::RunArgs {
        config: match f.config {
            Some(path) => app::ConfigSource::File(path),
            None => app::ConfigSource::ControlPlane,
        },
        node: f.node.clone(),
        cgroup,
        admin: f.admin,
        metrics: f.metrics,
        pin_dir,
        state_dir,
        drain: Duration::from_secs(f.drain_seconds),
        excluded_ports: f.exclude_port,
        reload_interval: Duration::from_millis(f.reload_ms),
        worker_threads: f.worker_threads.max(1),
        access_log: access_log(f.access_log_format, &f.access_log_fields)?,
        fast_path: f.fast_path,
        tunnel: if f.tunnel == "hbone" {
            mesh_agent::datapath::Tunnel::Hbone
        } else {
            mesh_agent::datapath::Tunnel::Plaintext
        },
        traces: f.traces.export(vec![
            ("service.name", "ferrymesh-agent".into()),
            ("k8s.node.name", f.node.clone()),
        ]),
        identity: f.identity.into_args(),
        jwks_ca: f.jwks_ca,
        caps: app::CapFlags {
            connections: f.max_connections,
            per_peer: f.max_connections_per_peer,
        },
        netns_places: mesh_agent::inpod::discover::Places {
            dirs: f.netns_dir,
            proc: !f.no_proc_netns,
        },
    })
    .map_err(|e| e.to_string())
}

fn waypoint(f: WaypointFlags) -> Result<(), String> {
    if let Some(d) = &f.jwks_dir {
        mesh_model::l7::jwks_file::allow_in(d.clone());
    }
    mesh_agent::waypoint::standalone::run(mesh_agent::waypoint::standalone::Args {
        config: f.config,
        node: f.node.clone(),
        workload: f.workload.clone(),
        hbone: f.hbone,
        gateway: f.gateway,
        trusted_proxies: f.trusted_proxies,
        http: f.http,
        https: f.https,
        tls_cert: f.tls_cert,
        tls_key: f.tls_key,
        metrics: f.metrics,
        reload_interval: Duration::from_millis(f.reload_ms),
        worker_threads: f.worker_threads.max(1),
        traces: f.traces.export(vec![
            ("service.name", "ferrymesh-waypoint".into()),
            ("k8s.node.name", f.node.clone()),
            ("ferrymesh.workload", f.workload.clone()),
        ]),
        identity: f.identity.into_args(),
    })
    .map_err(|e| e.to_string())
}

fn request_cert(f: RequestCertFlags) -> Result<(), String> {
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let id: Identity = f.identity.parse().map_err(|e| format!("{e}"))?;
    let (root_pem, token) = (read(&f.root)?, read(&f.token_file)?);
    let (csr, _key) = mesh_model::ca::new_csr(&id).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let client = identity::client::CaClient::new(&f.address, &root_pem, &f.node, &token)?;
        client.sign(csr, Duration::from_secs(3600)).await
    });
    let report = match result {
        Ok((chain, _)) => serde_json::json!({"signed": true, "chain": chain.len()}),
        Err(e) => serde_json::json!({"signed": false, "error": e.to_string()}),
    };
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Run(f) => run(f),
        Command::Waypoint(f) => waypoint(f),
        Command::RequestCert(f) => request_cert(f),
        Command::HboneProbe(args) => probe::run(args),
        Command::Uninstall(f) => uninstall(f),
        Command::CniInstall(f) => cni_install(f),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// The chart always passes `--otlp-endpoint={{ value }}`: empty means off.
    #[test]
    fn an_empty_otlp_endpoint_is_off() {
        let cases = [
            (vec![], None),
            (vec!["--otlp-endpoint="], None),
            (
                vec!["--otlp-endpoint=http://c:4317", "--trace-sampling=5"],
                Some(("http://c:4317", 5.0)),
            ),
        ];
        for (flags, want) in cases {
            let mut argv = vec!["mesh-agent", "run", "--node", "n", "--config", "/dev/null"];
            argv.extend(&flags);
            let Command::Run(f) = Cli::try_parse_from(&argv).expect("flags").command else {
                panic!("not run");
            };
            let got = f.traces.export(vec![]);
            let got = got
                .as_ref()
                .map(|e| (e.endpoint.as_str(), e.sampling_percent));
            assert_eq!(got, want, "{flags:?}");
        }
    }
}
