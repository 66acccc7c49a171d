//! Generates the gRPC code of the CA and config distribution from proto/ (protox:
//! no protoc needed). No eBPF here: this crate builds on any machine with Rust.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/ca.proto", "proto/config.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
