//! User side of the loopback fast path (see mesh-ebpf's `fast_path`): attaches the
//! sk_msg program to the shared `FAST_SOCKS` sockhash and switches sockops'
//! insertions on. Off (`--fast-path off`) or when the kernel refuses the
//! attachment, every byte takes the loopback TCP path as before.
use aya::{
    maps::{Array, MapData, MapError, PerCpuArray, SockHash},
    programs::{ProgramError, SkMsg},
    Ebpf,
};
use mesh_common::{fast, maps, programs, FastKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("eBPF map {0} is missing from the object; rebuild with `cargo xtask build`")]
    MissingMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

/// Which pods' loopback hops take the fast path. Experimental, off by default:
/// on this kernel (6.18) a message redirected into a socket's receive queue has
/// no backpressure (a sender that outpaces its reader - an application ahead of
/// an agent bound by TLS - gets ENOMEM from write), and a socket in a sockhash is
/// read through tcp_bpf_recvmsg, which answers EAGAIN to a blocking reader woken
/// without data. Only for applications that read with non-blocking sockets and
/// send no faster than the agent forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Pods annotated `ferrymesh.io/fast-path: "true"`, when the kernel takes the
    /// sk_msg program.
    Annotated,
    /// Every pod (benchmarks).
    All,
    /// None: every byte takes loopback TCP (the default).
    Off,
}

pub struct FastPath {
    mode: Mode,
    /// Whether sockets are being put in the sockhash (not off, and sk_msg attached).
    pub active: bool,
    _switch: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    _socks: SockHash<MapData, FastKey>,
}

fn take(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, Error> {
    bpf.take_map(name).ok_or(Error::MissingMap(name))
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { name, source }
}

/// Attaches the fast path (unless mode Off); an attachment the kernel refuses
/// leaves it off, logged, never an error.
pub fn set_up(bpf: &mut Ebpf, mode: Mode) -> Result<FastPath, Error> {
    let mut switch = Array::try_from(take(bpf, maps::FAST_ON)?).map_err(map_err(maps::FAST_ON))?;
    let counters = PerCpuArray::try_from(take(bpf, maps::FAST_COUNTERS)?)
        .map_err(map_err(maps::FAST_COUNTERS))?;
    let socks: SockHash<MapData, FastKey> =
        SockHash::try_from(take(bpf, maps::FAST_SOCKS)?).map_err(map_err(maps::FAST_SOCKS))?;
    let active = mode != Mode::Off && attach(bpf, &socks);
    switch
        .set(0, u32::from(active), 0)
        .map_err(map_err(maps::FAST_ON))?;
    tracing::info!(?mode, active, "loopback fast path (sockops + sk_msg)");
    Ok(FastPath {
        mode,
        active,
        _switch: switch,
        counters,
        _socks: socks,
    })
}

fn attach(bpf: &mut Ebpf, socks: &SockHash<MapData, FastKey>) -> bool {
    let attached = (|| -> Result<(), ProgramError> {
        let p: &mut SkMsg = bpf
            .program_mut(programs::FAST_MSG)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        p.load()?;
        p.attach(socks.fd())?;
        Ok(())
    })();
    if let Err(e) = &attached {
        tracing::warn!(
            "the loopback fast path is off: the kernel refused sk_msg on a sockhash: {e}"
        );
    }
    attached.is_ok()
}

impl FastPath {
    /// The `ENROLLED_*` flag of a pod whose annotation asks (`requested`) or not.
    pub fn flags(&self, requested: bool) -> u32 {
        let on = self.active && (self.mode == Mode::All || requested);
        if on {
            mesh_common::ENROLLED_FAST
        } else {
            0
        }
    }

    /// The fast path's counters, summed over CPUs.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        (0..fast::COUNT)
            .map(|i| {
                let v = self
                    .counters
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (fast::NAMES[i as usize], v)
            })
            .collect()
    }
}
