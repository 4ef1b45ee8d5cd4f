//! `holdfast`: see the `holdfast_cli` library.

fn main() -> anyhow::Result<()> {
    holdfast_cli::main()
}
