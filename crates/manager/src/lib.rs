//! holdfastd, the manager: keeps each container's declared state in an
//! embedded database, reconciles it against containerd's task list in
//! phases when it starts, applies restart policies, and serves the
//! `holdfast.v1` API (see `proto/holdfast/v1`).
#![deny(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod declared;
pub mod error;
pub mod events;
pub mod exec;
pub mod gate;
pub mod logs;
pub mod manager;
pub mod notify;
pub mod restart;
pub mod rootfs_changes;
pub mod schedule;
pub mod server;
pub mod startup;
pub mod stop;
pub mod store;
pub mod validate;

pub use error::{Error, Result};

/// Runs holdfastd with the process's arguments; what `main` calls.
pub fn main() -> anyhow::Result<()> {
    daemon::main()
}

pub mod containerd;
pub mod spec;
