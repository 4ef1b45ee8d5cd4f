//! `containerd-shim-shim-v2`: containerd runs it for runtime `io.rust.shim.v2`.

fn main() {
    std::process::exit(holdfast_shim::bootstrap::main());
}
