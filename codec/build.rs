//! Compiles `proto/dndm.proto` with protox (pure Rust, no system `protoc`) and prost-build.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["dndm.proto"], ["proto"])?;
    prost_build::Config::new()
        // Batch payloads are `Bytes`: decoding slices the received frame instead of copying.
        .bytes([".dndm.wire.v1.BatchMessage.payload"])
        .compile_fds(descriptors)?;
    Ok(())
}
