//! Generates the Sparkplug B protobuf types from the Eclipse Tahu
//! `proto/sparkplug_b.proto` (EPL-2.0, kept unmodified) with protox, a
//! pure-Rust protobuf compiler: no system `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sparkplug_b.proto");
    let descriptors = protox::compile(["proto/sparkplug_b.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
