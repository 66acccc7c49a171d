//! `cargo xtask lab up|down|clean`.
use anyhow::Result;
use clap::Subcommand;
use ferrymesh_tests::{Lab, LabSpec, PodSpec, ServiceSpec};
use nix::sys::signal::{SigSet, Signal};

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
        ],
        services: vec![ServiceSpec {
            name: "server".into(),
            namespace: "shop".into(),
            app: "server".into(),
            port: 80,
            target_port: 8080,
        }],
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
    // Block the signals first so sigwait sees them and Drop cleans up.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
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
    let sig = set.wait()?;
    println!("{sig:?}: tearing the lab down");
    drop(lab);
    Ok(())
}
