//! Builds the eBPF object (mesh-ebpf) for bpfel-unknown-none and embeds it.
//!
//! One stable toolchain is enough: RUSTC_BOOTSTRAP=1 lets aya-build pass
//! `-Z build-std=core`. `cargo xtask build` installs rust-src and bpf-linker first.
//! Only this crate builds eBPF: mesh-model, mesh-control, meshctl and xtask build
//! without the kernel toolchain (`cargo xtask test` checks that it stays so).
use std::env;

fn main() -> anyhow::Result<()> {
    // The toolchain that runs this build (rustup sets it), else the default one.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    println!("cargo:rerun-if-changed=../mesh-common/src");
    // Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) exercise parsers only: no eBPF
    // object, and no sanitizer flags leaking into the BPF target's build.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(env::var("OUT_DIR")?);
        std::fs::write(out.join("mesh"), [])?;
        return Ok(());
    }
    let package = aya_build::Package {
        name: "mesh-ebpf",
        root_dir: "../mesh-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)).map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs failed: {e:#}\n\
             hint: run `cargo xtask build`, which installs rust-src and bpf-linker"
        )
    })
}
