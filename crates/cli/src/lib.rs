//! `holdfast`, the command line client of holdfastd's `holdfast.v1` API.
//!
//! Docker-like subcommands (`run`, `ps`, `logs`, `exec`...) over gRPC on
//! holdfastd's unix socket (`--host`, `HOLDFAST_HOST`).
//!
//! Exit status: 0 on success; the container's exit code for `run` without
//! `-d`, the process's for `exec`; 125 when holdfastd answered a request
//! with an error; 1 for other errors (holdfastd unreachable, bad values
//! found after parsing); 2 for bad usage (clap).
#![deny(unsafe_code)]

pub mod args;
pub mod checkpoint;
pub mod commands;
pub mod connect;
pub mod error;
pub mod output;
pub mod parse;
pub mod terminal;
pub mod transfer;
pub mod update;

use clap::Parser;

/// Exit status when holdfastd answered with an error (as docker's 125).
pub const EXIT_DAEMON_ERROR: i32 = 125;

/// Runs the CLI with the process's arguments; what `main` calls. Exits the
/// process with the command's exit status when it is not 0.
pub fn main() -> anyhow::Result<()> {
    let cli = args::Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(commands::dispatch(cli));
    // Do not wait for a blocked read of stdin (exec -i).
    runtime.shutdown_background();
    match result {
        Ok(0) => Ok(()),
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            let daemon = e.downcast_ref::<error::DaemonError>().is_some();
            std::process::exit(if daemon { EXIT_DAEMON_ERROR } else { 1 })
        }
    }
}
