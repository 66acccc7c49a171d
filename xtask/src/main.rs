//! `cargo xtask`: bootstrap, build, test, demo, bench and the lab.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_control;
mod bench_l7;
mod bench_peer;
mod bench_scale;
mod bench_tls;
mod bench_upgrade;
mod bench_util;
mod bootstrap;
mod build;
mod check;
mod cycles;
mod demo;
mod deploy;
mod fuzz;
mod lab;
mod sh;
mod test;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ferrymesh developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (rust-src, bpf-linker, Debian packages) and build the
    /// eBPF object, the agent and the lab app.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests and the lab integration tests (real eBPF).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy -D warnings`.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Bring up a 2-node lab and show a captured connection step by step.
    Demo,
    /// Measure the mesh against no mesh in the same run; prints ratios, writes JSON.
    Bench {
        /// Where to write the JSON report.
        #[arg(long, default_value = "target/bench/bench.json")]
        out: std::path::PathBuf,
    },
    /// Fuzz every parser that takes hostile input (config, HBONE CONNECT, HTTP
    /// heads, JWT, CSR) with cargo-fuzz; `cargo xtask test` only replays the corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Render the Helm chart offline and validate every manifest in deploy/.
    DeployCheck {
        /// Regenerate the CRDs from the Rust model first.
        #[arg(long)]
        write: bool,
    },
    /// The network-namespace lab.
    Lab {
        #[command(subcommand)]
        action: lab::Action,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { release } => {
            bootstrap::ensure().and_then(|()| build::all(release).map(|_| ()))
        }
        Command::Test { no_lint, args } => test::run(!no_lint, &args),
        Command::Demo => demo::run(),
        Command::Bench { out } => bench::run(&out),
        Command::DeployCheck { write } => deploy::run(write),
        Command::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
        Command::Lab { action } => lab::run(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
