//! Compiles `proto/` with a vendored protoc and writes the file descriptor set
//! that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt_include = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    // Every file of the package, in a stable order.
    let mut protos: Vec<PathBuf> = std::fs::read_dir("proto/tenancy/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tenancy_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[PathBuf::from("proto"), wkt_include])?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
