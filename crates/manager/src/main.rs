//! `holdfastd`: see the `holdfast_manager` library.

fn main() -> anyhow::Result<()> {
    holdfast_manager::main()
}
