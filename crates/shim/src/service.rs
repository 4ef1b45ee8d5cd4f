//! The ttrpc task service: converts requests, calls [`TaskShim`], converts
//! answers. No lifecycle logic lives here.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::Result as TtrpcResult;
use containerd_shim_protos::types::task::ProcessInfo;
use tracing::Instrument;

use crate::io::StdioPaths;
use crate::publisher::timestamp;
use crate::shim::{CheckpointRequest, CreateTask, TaskShim};

/// The ttrpc face of a [`TaskShim`].
#[derive(Debug, Clone)]
pub struct TaskService {
    shim: Arc<TaskShim>,
}

impl TaskService {
    /// Serves `shim`.
    pub fn new(shim: Arc<TaskShim>) -> Self {
        TaskService { shim }
    }
}

fn span(method: &'static str, id: &str, exec_id: &str) -> tracing::Span {
    tracing::info_span!("task", method, id = %id, exec_id = %exec_id)
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let task = CreateTask {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req.rootfs.clone(),
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            options: req.options.as_ref().cloned(),
            checkpoint: req.checkpoint.clone(),
            parent_checkpoint: req.parent_checkpoint.clone(),
        };
        let pid = self
            .shim
            .create(task)
            .instrument(span("create", &req.id, ""))
            .await?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self
            .shim
            .start(&req.id, &req.exec_id)
            .instrument(span("start", &req.id, &req.exec_id))
            .await?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let st = self.shim.state(&req.id, &req.exec_id)?;
        Ok(api::StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: st.bundle.display().to_string(),
            pid: st.pid,
            status: st.status.to_proto().into(),
            stdin: st.stdio.stdin,
            stdout: st.stdio.stdout,
            stderr: st.stdio.stderr,
            terminal: st.stdio.terminal,
            exit_status: st.exit.map(|e| e.status as u32).unwrap_or(0),
            exited_at: st.exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (pid, exit) = self
            .shim
            .delete(&req.id, &req.exec_id)
            .instrument(span("delete", &req.id, &req.exec_id))
            .await?;
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.map(|e| e.status as u32).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let pids = self
            .shim
            .pids(&req.id)
            .instrument(span("pids", &req.id, ""))
            .await?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|(pid, _exec_id)| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        self.shim
            .pause(&req.id)
            .instrument(span("pause", &req.id, ""))
            .await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        self.shim
            .resume(&req.id)
            .instrument(span("resume", &req.id, ""))
            .await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        let checkpoint = CheckpointRequest::new(&req.id, &req.path, req.options.as_ref())?;
        self.shim
            .checkpoint(&req.id, checkpoint)
            .instrument(span("checkpoint", &req.id, ""))
            .await?;
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.shim
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .instrument(span("kill", &req.id, &req.exec_id))
            .await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let spec = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
        self.shim
            .exec(&req.id, &req.exec_id, stdio, spec)
            .instrument(span("exec", &req.id, &req.exec_id))
            .await?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<Empty> {
        self.shim
            .resize_pty(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        self.shim.close_io(&req.id, &req.exec_id, req.stdin)?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or(b"{}");
        self.shim
            .update(&req.id, resources)
            .instrument(span("update", &req.id, ""))
            .await?;
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let exit = self.shim.wait(&req.id, &req.exec_id).await?;
        Ok(api::WaitResponse {
            exit_status: exit.status as u32,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self
            .shim
            .stats(&req.id)
            .instrument(span("stats", &req.id, ""))
            .await?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.shim.task_pid(&req.id),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.shim.shutdown(req.now);
        Ok(Empty::new())
    }
}
