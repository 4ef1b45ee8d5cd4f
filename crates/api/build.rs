//! Generates the manager API from `proto/holdfast/v1` (client and server),
//! plus the file descriptor set the gRPC reflection service serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [proto_root.join("holdfast/v1/containers.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("holdfast_v1_descriptor.bin"))
        .compile_protos(&files, &[proto_root])?;
    Ok(())
}
