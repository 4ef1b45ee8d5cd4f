//! `holdfast`, the command line client of holdfastd's `holdfast.v1` API.
#![deny(unsafe_code)]

/// Runs the CLI with the process's arguments; what `main` calls.
pub fn main() -> anyhow::Result<()> {
    anyhow::bail!("holdfast is not implemented yet")
}
