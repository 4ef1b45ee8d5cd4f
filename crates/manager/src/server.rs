//! The tonic adapter of `holdfast.v1.Containers`: each handler unpacks the
//! request, calls [`Manager`] and wraps the answer; errors become statuses
//! through the one mapping in [`crate::error`]. Also builds the gRPC health
//! and reflection services served next to it.
//!
//! Logs, Exec and Events are streams: their domain streams ([`crate::logs`],
//! [`crate::exec`], [`crate::events`]) are mapped to messages here.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use holdfast_api::v1::containers_server::{Containers, ContainersServer};
use holdfast_api::v1::{
    exec_request, exec_response, import_request, CreateCheckpointRequest, CreateCheckpointResponse,
    CreateRequest, CreateResponse, Event, EventsRequest, ExecRequest, ExecResponse, ExportRequest,
    ExportResponse, ImportRequest, ImportResponse, InspectRequest, InspectResponse, KillRequest,
    KillResponse, ListCheckpointsRequest, ListCheckpointsResponse, ListRequest, ListResponse,
    LogsRequest, LogsResponse, MigrateRequest, MigrateResponse, RemoveCheckpointRequest,
    RemoveCheckpointResponse, RemoveRequest, RemoveResponse, RestartRequest, RestartResponse,
    RestoreRequest, RestoreResponse, StartRequest, StartResponse, StopRequest, StopResponse,
    UpdateRequest, UpdateResponse, WaitRequest, WaitResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::exec::{ExecInput, ExecOptions, ExecOutput};
use crate::logs::{LogChunk, LogsOptions};
use crate::manager::{self, CheckpointRequest, ContainerUpdate, Manager};

/// The `Containers` service over a [`Manager`].
#[derive(Debug, Clone)]
pub struct Service {
    manager: Arc<Manager>,
}

impl Service {
    /// The service of `manager`.
    pub fn new(manager: Arc<Manager>) -> Service {
        Service { manager }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> ContainersServer<Service> {
        ContainersServer::new(self)
    }
}

/// The gRPC reflection service (v1) describing `holdfast.v1`.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(holdfast_api::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection service: {e}")))
}

#[tonic::async_trait]
impl Containers for Service {
    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Error::invalid("spec", "is required"))?;
        let container = self.manager.create(spec).await?;
        Ok(Response::new(CreateResponse {
            container: Some(container),
        }))
    }

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<StartResponse>, Status> {
        let name = request.into_inner().name;
        let container = self.manager.start(&name).await?;
        Ok(Response::new(StartResponse {
            container: Some(container),
        }))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        let req = request.into_inner();
        let container = self.manager.stop(&req.name, req.timeout_seconds).await?;
        Ok(Response::new(StopResponse {
            container: Some(container),
        }))
    }

    async fn restart(
        &self,
        request: Request<RestartRequest>,
    ) -> Result<Response<RestartResponse>, Status> {
        let req = request.into_inner();
        let container = self.manager.restart(&req.name, req.timeout_seconds).await?;
        Ok(Response::new(RestartResponse {
            container: Some(container),
        }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let req = request.into_inner();
        self.manager.kill(&req.name, &req.signal, req.all).await?;
        Ok(Response::new(KillResponse {}))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let req = request.into_inner();
        self.manager.remove(&req.name, req.force).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let containers = self.manager.list(request.into_inner().all).await?;
        Ok(Response::new(ListResponse { containers }))
    }

    async fn inspect(
        &self,
        request: Request<InspectRequest>,
    ) -> Result<Response<InspectResponse>, Status> {
        let container = self.manager.inspect(&request.into_inner().name).await?;
        Ok(Response::new(InspectResponse {
            container: Some(container),
        }))
    }

    type LogsStream = BoxStream<'static, Result<LogsResponse, Status>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let options = LogsOptions::new(req.follow, req.tail, req.since)?;
        let stream = self.manager.logs(&req.name, options).await?;
        Ok(Response::new(
            stream
                .map(|r| r.map(LogChunk::into_response).map_err(Status::from))
                .boxed(),
        ))
    }

    type ExecStream = BoxStream<'static, Result<ExecResponse, Status>>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut requests = request.into_inner();
        let start = match requests.message().await?.and_then(|m| m.msg) {
            Some(exec_request::Msg::Start(start)) => start,
            _ => return Err(Error::invalid("exec", "the first message must be start").into()),
        };
        let options = ExecOptions {
            command: start.command,
            env: start.env,
            tty: start.tty,
            stdin: start.stdin,
            working_dir: start.working_dir,
            size: (start.width > 0 && start.height > 0).then_some((start.width, start.height)),
        };
        // The client's messages end the input when they end or fail.
        let input = requests
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok().and_then(exec_input)));
        let stream = self
            .manager
            .exec(&start.name, options, Box::pin(input))
            .await?;
        Ok(Response::new(
            stream
                .map(|r| r.map(exec_response).map_err(Status::from))
                .boxed(),
        ))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let (exit_code, exited_at) = self.manager.wait(&request.into_inner().name).await?;
        Ok(Response::new(WaitResponse {
            exit_code,
            exited_at,
        }))
    }

    type EventsStream = BoxStream<'static, Result<Event, Status>>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let name = request.into_inner().name;
        let filter = (!name.is_empty()).then_some(name.as_str());
        let stream = self.manager.events(filter)?;
        Ok(Response::new(stream.map(Ok).boxed()))
    }

    async fn create_checkpoint(
        &self,
        request: Request<CreateCheckpointRequest>,
    ) -> Result<Response<CreateCheckpointResponse>, Status> {
        let req = request.into_inner();
        let checkpoint = self
            .manager
            .create_checkpoint(CheckpointRequest {
                container: req.container,
                name: req.name,
                leave_running: req.leave_running,
                tcp_established: req.tcp_established,
                file_locks: req.file_locks,
                scheduled: false,
            })
            .await?;
        Ok(Response::new(CreateCheckpointResponse {
            checkpoint: Some(checkpoint),
        }))
    }

    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        let checkpoints = self
            .manager
            .list_checkpoints(&request.into_inner().container)
            .await?;
        Ok(Response::new(ListCheckpointsResponse { checkpoints }))
    }

    async fn remove_checkpoint(
        &self,
        request: Request<RemoveCheckpointRequest>,
    ) -> Result<Response<RemoveCheckpointResponse>, Status> {
        let req = request.into_inner();
        self.manager
            .remove_checkpoint(&req.container, &req.name)
            .await?;
        Ok(Response::new(RemoveCheckpointResponse {}))
    }

    async fn restore(
        &self,
        request: Request<RestoreRequest>,
    ) -> Result<Response<RestoreResponse>, Status> {
        let req = request.into_inner();
        let container = self
            .manager
            .restore(&req.container, &req.checkpoint)
            .await?;
        Ok(Response::new(RestoreResponse {
            container: Some(container),
        }))
    }

    type ExportStream = BoxStream<'static, Result<ExportResponse, Status>>;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let req = request.into_inner();
        let stream = self.manager.export(&req.container, &req.checkpoint).await?;
        Ok(Response::new(
            stream
                .map(|r| {
                    r.map(|c| ExportResponse {
                        data: c.data,
                        done_bytes: c.done,
                        total_bytes: c.total,
                    })
                    .map_err(Status::from)
                })
                .boxed(),
        ))
    }

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let mut requests = request.into_inner();
        let options = match requests.message().await?.and_then(|m| m.msg) {
            Some(import_request::Msg::Options(o)) => o,
            _ => {
                return Err(
                    Error::invalid("import", "the first message must be the options").into(),
                )
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(forward_import_data(requests, tx));
        let (container, checkpoint) = self
            .manager
            .import(
                manager::ImportRequest {
                    name: options.name,
                    rootfs: options.rootfs,
                },
                rx,
            )
            .await?;
        Ok(Response::new(ImportResponse {
            container: Some(container),
            checkpoint: Some(checkpoint),
        }))
    }

    async fn migrate(
        &self,
        request: Request<MigrateRequest>,
    ) -> Result<Response<MigrateResponse>, Status> {
        let req = request.into_inner();
        let migrated = self
            .manager
            .migrate(manager::MigrateRequest {
                container: req.container,
                target: req.target,
                name: req.name,
                keep_source: req.keep_source,
            })
            .await?;
        Ok(Response::new(MigrateResponse {
            container: Some(migrated.container),
            checkpoint: migrated.checkpoint,
            bytes: migrated.bytes,
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let req = request.into_inner();
        let update = ContainerUpdate {
            restart: req.restart,
            checkpoint_schedule: req.checkpoint_schedule,
            clear_checkpoint_schedule: req.clear_checkpoint_schedule,
        };
        let container = self.manager.update(&req.name, update).await?;
        Ok(Response::new(UpdateResponse {
            container: Some(container),
        }))
    }
}

/// Passes an import's data messages on to the manager until the client's
/// stream ends (a repeated options message is ignored); a failed stream is
/// passed on as an error, so the archive reads as cut short.
async fn forward_import_data(
    mut requests: Streaming<ImportRequest>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    loop {
        let item = match requests.message().await {
            Ok(Some(ImportRequest {
                msg: Some(import_request::Msg::Data(data)),
            })) => Ok(data),
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(status) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("the client's stream failed: {}", status.message()),
            )),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// An exec input message, if it is one (a second start is ignored).
fn exec_input(request: ExecRequest) -> Option<ExecInput> {
    match request.msg? {
        exec_request::Msg::Stdin(data) => Some(ExecInput::Stdin(data)),
        exec_request::Msg::CloseStdin(_) => Some(ExecInput::CloseStdin),
        exec_request::Msg::Resize(r) => Some(ExecInput::Resize {
            width: r.width,
            height: r.height,
        }),
        exec_request::Msg::Start(_) => None,
    }
}

/// The message of an exec output.
fn exec_response(output: ExecOutput) -> ExecResponse {
    let msg = match output {
        ExecOutput::Stdout(data) => exec_response::Msg::Stdout(data),
        ExecOutput::Stderr(data) => exec_response::Msg::Stderr(data),
        ExecOutput::Exit(code) => exec_response::Msg::ExitCode(code),
    };
    ExecResponse { msg: Some(msg) }
}
