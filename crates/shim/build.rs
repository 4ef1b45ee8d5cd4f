//! Links the shim as a position-dependent executable: one shim runs per
//! container, and a PIE binary dirties (and so privately owns) every page of
//! relocated read-only data at start-up. Non-PIE, those pages stay shared
//! with the page cache.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
