//! Wiring of `mesh-agent run`: load eBPF, read the config, enrol, serve, reload.
use crate::inpod;

mod args;
mod inputs;
pub mod memory;
mod persist;
mod serve;

pub use args::*;

/// A node proxy holds a socket or two per connection: lift the soft limit on open
/// files to the hard one.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::warn!("cannot raise the open-files limit from {soft} to {hard}");
        }
    }
}

pub fn run(args: RunArgs) -> Result<(), Error> {
    memory::tune_malloc();
    inpod::init_home().map_err(Error::Runtime)?;
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve::serve(args))
}
