//! Generates the manager API from `proto/holdfast/v1` (client and server),
//! the shim's runtime options (`proto/holdfast/shim/v1`), plus the file
//! descriptor set the gRPC reflection service serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_root.join("holdfast/v1/containers.proto"),
        // The shim's runtime options, which holdfastd sends to containerd.
        proto_root.join("holdfast/shim/v1/options.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("holdfast_v1_descriptor.bin"))
        .compile_protos(&files, &[proto_root])?;
    Ok(())
}
