//! `cargo xtask lab up|down|clean`.
use anyhow::Result;
use clap::Subcommand;
use ferrymesh_tests::{Lab, LabSpec, PodSpec, ServiceSpec};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{bootstrap, build};

#[derive(Subcommand)]
pub enum Action {
    /// Bring up a 2-node lab with agents and keep it until Ctrl-C (or SIGTERM).
    Up {
        /// Use release builds of the agent and lab-app.
        #[arg(long)]
        release: bool,
    },
    /// Remove every lab's namespaces, cgroups and processes (same as clean).
    Down,
    /// Remove leftovers of killed runs: lab namespaces, cgroups, their processes.
    Clean,
}

pub fn demo_spec() -> LabSpec {
    LabSpec {
        nodes: vec!["node-a".into(), "node-b".into()],
        namespaces: vec![("shop".into(), true), ("legacy".into(), false)],
        pods: vec![
            PodSpec::new("client", "shop", "node-a"),
            PodSpec::new("server", "shop", "node-b"),
            PodSpec::new("outsider", "legacy", "node-a"),
            PodSpec::new("web-v1", "shop", "node-b")
                .label("svc", "web")
                .label("version", "v1"),
            PodSpec::new("web-v2", "shop", "node-a")
                .label("svc", "web")
                .label("version", "v2"),
        ],
        services: vec![ServiceSpec {
            name: "server".into(),
            namespace: "shop".into(),
            app: "server".into(),
            port: 80,
            target_port: 8080,
        }],
        agent_args: vec![],
        local_ca: false,
    }
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { release } => up(release),
        Action::Down | Action::Clean => {
            let removed = ferrymesh_tests::sys::clean_all()?;
            if removed.is_empty() {
                println!("nothing to clean");
            }
            for r in removed {
                println!("removed {r}");
            }
            Ok(())
        }
    }
}

fn up(release: bool) -> Result<()> {
    bootstrap::ensure()?;
    build::all(release)?;
    // A handler (not a blocked mask, which children would inherit and the agents
    // would then never see SIGTERM) lets Drop tear the lab down.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        sigaction(Signal::SIGINT, &action)?;
        sigaction(Signal::SIGTERM, &action)?;
    }
    let mut lab = Lab::new(demo_spec())?;
    lab.start_agents()?;
    println!(
        "lab {} is up; config: {}",
        lab.run,
        lab.config_path().display()
    );
    for p in &lab.pods {
        println!(
            "  pod {}/{} on {}: {} {}  enter: nsenter --net={}",
            p.spec.namespace,
            p.spec.name,
            p.spec.node,
            p.ip4,
            p.ip6,
            p.netns_path().display()
        );
    }
    for n in &lab.nodes {
        println!(
            "  node {}: agent admin 127.0.0.1:15000 inside /run/netns/{}",
            n.name, n.netns
        );
    }
    println!("Ctrl-C to tear it down.");
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("tearing the lab down");
    drop(lab);
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}
