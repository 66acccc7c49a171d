//! `mesh-agent`: the ferrymesh node agent.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use mesh_agent::app;

#[derive(Parser)]
#[command(name = "mesh-agent", version, about = "ferrymesh node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: attach the capture programs, enrol local pods, proxy.
    Run {
        /// YAML file of Kubernetes-shaped objects; reloaded when it changes.
        #[arg(long)]
        config: PathBuf,
        /// Name of this node (workloads with spec.node equal to it are local).
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// cgroup v2 directory whose sockets are captured (default: the cgroup v2 root).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Admin endpoint (stats, readiness, config dump).
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Destination ports never captured outbound (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        exclude_port: Vec<u16>,
        /// Data-path threads.
        #[arg(long, env = "FERRYMESH_WORKER_THREADS", default_value_t = 2)]
        worker_threads: usize,
        /// How often to check the config file for changes, in milliseconds.
        #[arg(long, default_value_t = 250)]
        reload_ms: u64,
    },
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == "cgroup2").then(|| PathBuf::from(dir))
    })
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            node,
            cgroup,
            admin,
            exclude_port,
            reload_ms,
            worker_threads,
        } => {
            let Some(cgroup) = cgroup.or_else(cgroup2_root) else {
                eprintln!("error: no cgroup v2 mount found; mount cgroup2 or pass --cgroup");
                return ExitCode::from(2);
            };
            app::run(app::RunArgs {
                config,
                node,
                cgroup,
                admin,
                excluded_ports: exclude_port,
                reload_interval: Duration::from_millis(reload_ms.max(50)),
                worker_threads: worker_threads.max(1),
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
