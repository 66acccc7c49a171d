//! Generates the gRPC code of the CA and config distribution from proto/ (protox:
//! no protoc needed). No eBPF here: this crate builds on any machine with Rust.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/ca.proto", "proto/config.proto"], ["proto"])?;
    // Objects' JSON as `Bytes`: slices of the received message, not one allocation each.
    tonic_prost_build::configure()
        .bytes(".ferrymesh.config.v1.Resource.json")
        .compile_fds(fds)?;
    Ok(())
}
