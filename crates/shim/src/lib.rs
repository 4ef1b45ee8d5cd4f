//! holdfast's containerd shim v2 (`containerd-shim-shim-v2`, runtime
//! `io.rust.shim.v2`).
//!
//! One shim process runs per task. It creates the task with runc, owns its
//! stdio, reaps its processes as a child subreaper, keeps every exit status
//! until Delete, and publishes task events to containerd with a queue that
//! survives containerd being down. Nothing the shim does while a task runs
//! depends on containerd being up.
//!
//! Layout: [`bootstrap`] (the binary's start/delete/serve roles),
//! [`service`] (the thin ttrpc adapter), [`shim`] (the lifecycle logic),
//! [`runc`] (every runc invocation), [`io`] (stdio plumbing),
//! [`publisher`] (events), [`reaper`] (exit statuses).
#![deny(unsafe_code)]

pub mod bootstrap;
pub mod container;
pub mod cri;
pub mod error;
pub mod io;
pub mod logging;
pub mod oom;
pub mod options;
pub mod process;
pub mod publisher;
pub mod reaper;
pub mod runc;
pub mod service;
pub mod shim;
pub mod stats;
pub(crate) mod sys;
pub mod validate;

pub use error::{Error, Result};
