//! Compiles three versions of one protobuf message (`robot.Imu`, `proto/v1..v3`) with protox
//! and prost-build, each into its own directory, for the schema-compatibility tests.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for version in ["v1", "v2", "v3"] {
        let dir = out.join(version);
        std::fs::create_dir_all(&dir)?;
        let descriptors = protox::compile(["imu.proto"], [format!("proto/{version}")])?;
        prost_build::Config::new()
            .out_dir(&dir)
            .enable_type_names()
            .compile_fds(descriptors)?;
    }
    Ok(())
}
