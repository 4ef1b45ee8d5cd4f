//! A direct ttrpc client of a running shim (task API v2), for the calls
//! `ctr` cannot make: Update, a second Start, Stats on the wire.

use std::fmt;

use anyhow::{Context, Result};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::{Client, TaskClient};

/// The type URL containerd gives an OCI `LinuxResources` (JSON encoded).
pub const LINUX_RESOURCES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// A ttrpc error reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// The gRPC code name, e.g. `NOT_FOUND`, `FAILED_PRECONDITION`
    /// (`TRANSPORT` when the call never got an answer).
    pub code: String,
    /// The message.
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<ttrpc::Error> for RpcError {
    fn from(e: ttrpc::Error) -> Self {
        match e {
            ttrpc::Error::RpcStatus(s) => RpcError {
                code: format!("{:?}", s.code()),
                message: s.message().to_string(),
            },
            other => RpcError {
                code: "TRANSPORT".to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// A connection to one shim's task service.
pub struct ShimClient {
    task: TaskClient,
}

impl ShimClient {
    /// Connects to `address` (`unix:///run/containerd/s/<hash>`, as in the
    /// bundle's `address` file).
    pub fn connect(address: &str) -> Result<ShimClient> {
        let address = address.trim();
        let client =
            Client::connect(address).with_context(|| format!("connect to shim at {address}"))?;
        Ok(ShimClient {
            task: TaskClient::new(client),
        })
    }

    fn ctx() -> ttrpc::context::Context {
        ttrpc::context::with_timeout(10_000_000_000)
    }

    /// Start of the init process (`exec_id` empty) or an exec.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, RpcError> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self.task.start(Self::ctx(), &req)?.pid)
    }

    /// State of the init process or an exec: (status name, pid, exit status).
    pub fn state(&self, id: &str, exec_id: &str) -> Result<(String, u32, u32), RpcError> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self.task.state(Self::ctx(), &req)?;
        Ok((format!("{:?}", r.status), r.pid, r.exit_status))
    }

    /// Update with an OCI `LinuxResources` given as JSON.
    pub fn update(&self, id: &str, resources_json: &str) -> Result<(), RpcError> {
        let any = Any {
            type_url: LINUX_RESOURCES_TYPE.to_string(),
            value: resources_json.as_bytes().to_vec(),
            ..Default::default()
        };
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: MessageField::some(any),
            ..Default::default()
        };
        self.task.update(Self::ctx(), &req)?;
        Ok(())
    }

    /// Create of a task from the bundle at `bundle` (no rootfs mounts: the
    /// bundle's config.json names the root), without stdio.
    pub fn create(&self, id: &str, bundle: &str) -> Result<u32, RpcError> {
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.to_string(),
            ..Default::default()
        };
        Ok(self.task.create(Self::ctx(), &req)?.pid)
    }

    /// Create of a task from the bundle at `bundle` to be restored from the
    /// checkpoint folder `checkpoint` and/or (non-empty) holdfast's
    /// `restore_from` option (no rootfs mounts, no stdio).
    pub fn create_from_checkpoint(
        &self,
        id: &str,
        bundle: &str,
        checkpoint: &str,
        restore_from: &str,
    ) -> Result<u32, RpcError> {
        let options = if restore_from.is_empty() {
            MessageField::none()
        } else {
            let opts = holdfast_api::shim::v1::Options {
                restore_from: restore_from.to_string(),
                ..Default::default()
            };
            MessageField::some(Any {
                type_url: holdfast_api::shim::v1::OPTIONS_TYPE_URL.to_string(),
                value: prost::Message::encode_to_vec(&opts),
                ..Default::default()
            })
        };
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.to_string(),
            checkpoint: checkpoint.to_string(),
            options,
            ..Default::default()
        };
        Ok(self.task.create(Self::ctx(), &req)?.pid)
    }

    /// Delete of the init process (after a Create) or an exec.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<u32, RpcError> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self.task.delete(Self::ctx(), &req)?.exit_status)
    }

    /// Shutdown: the shim exits once it has no task left.
    pub fn shutdown(&self, id: &str) -> Result<(), RpcError> {
        let req = api::ShutdownRequest {
            id: id.to_string(),
            now: true,
            ..Default::default()
        };
        match self.task.shutdown(Self::ctx(), &req) {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = RpcError::from(e);
                // The shim may exit before it answers.
                if e.code == "TRANSPORT" {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Kill of the init process or an exec.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), RpcError> {
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.task.kill(Self::ctx(), &req)?;
        Ok(())
    }

    /// Stats of the task; returns the size of the encoded metrics.
    pub fn stats_len(&self, id: &str) -> Result<usize, RpcError> {
        let req = api::StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r = self.task.stats(Self::ctx(), &req)?;
        Ok(r.stats.as_ref().map(|a| a.value.len()).unwrap_or(0))
    }
}
