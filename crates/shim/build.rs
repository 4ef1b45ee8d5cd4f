//! Build script: generates the runtime options messages from `proto/`, and
//! links the shim as a position-dependent executable.
//!
//! One shim runs per container, and a PIE binary dirties (and so privately
//! owns) every page of relocated read-only data at start-up. Non-PIE, those
//! pages stay shared with the page cache.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("holdfast/shim/v1/options.proto"),
        root.join("runtimeoptions/v1/api.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    prost_build::compile_protos(&files, &[root])?;
    Ok(())
}
