//! Generates the Sparkplug B protobuf types from the workspace's
//! `proto/sparkplug_b.proto` with protox (pure Rust, no system `protoc`).
//! The simulator shares the schema with the daemon, not its code, so its
//! Sparkplug edge node checks the daemon's host side independently.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/sparkplug_b.proto");
    let descriptors = protox::compile(["../proto/sparkplug_b.proto"], ["../proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
