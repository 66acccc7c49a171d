//! ferrymesh kernel programs: outbound capture (cgroup/connect4, cgroup/connect6),
//! original-destination bookkeeping (sockops), inbound capture (sk_lookup) and the
//! loopback fast path (sockops + sk_msg).
//!
//! Entry points are thin; each calls a `try_*` function. Decisions that do not touch
//! the context live in `decide.rs` so they read like the design.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod capture;
mod decide;
mod fast_path;
mod inbound;
mod maps;
mod orig_dst;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Built for the host only so `cargo check --workspace` works; the programs are
/// compiled for bpfel-unknown-none by mesh-agent's build script.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
