//! holdfast's containerd shim v2 (`containerd-shim-shim-v2`, runtime
//! `io.rust.shim.v2`).
//!
//! One shim process serves each task, or each Kubernetes pod when
//! containerd's CRI plugin runs it (`shim_per = "pod"`, the default: the
//! pod's tasks share the shim its sandbox started, see [`options`]). The
//! shim creates the tasks with runc, owns their stdio, reaps their
//! processes as a child subreaper, keeps every exit status until Delete,
//! and publishes task events to containerd with a queue that survives
//! containerd being down. Nothing the shim does while a task runs depends
//! on containerd being up: every byte a container writes goes to a durable
//! journal first and from there to its reader.
//!
//! Layout: [`bootstrap`] (the binary's start/delete/serve roles),
//! [`service`] (the thin ttrpc adapter), [`shim`] (the lifecycle logic),
//! [`runc`] (every runc invocation), [`io`] (stdio plumbing: drains into
//! the journal, forwarders out of it), [`cri`] (the Kubernetes log file the
//! shim writes itself), [`publisher`] (events), [`reaper`] (exit statuses).
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
