//! The tonic adapter of `holdfast.v1.Containers`: each handler unpacks the
//! request, calls [`Manager`] and wraps the answer; errors become statuses
//! through the one mapping in [`crate::error`]. Also builds the gRPC health
//! and reflection services served next to it.
//!
//! Logs, Exec and Events answer `UNIMPLEMENTED` for now.

use std::sync::Arc;

use futures::stream::BoxStream;
use holdfast_api::v1::containers_server::{Containers, ContainersServer};
use holdfast_api::v1::{
    CreateRequest, CreateResponse, Event, EventsRequest, ExecRequest, ExecResponse, InspectRequest,
    InspectResponse, KillRequest, KillResponse, ListRequest, ListResponse, LogsRequest,
    LogsResponse, RemoveRequest, RemoveResponse, RestartRequest, RestartResponse, StartRequest,
    StartResponse, StopRequest, StopResponse, WaitRequest, WaitResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::manager::Manager;

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

fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented in this holdfastd yet"))
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
        _request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(unimplemented("Logs"))
    }

    type ExecStream = BoxStream<'static, Result<ExecResponse, Status>>;

    async fn exec(
        &self,
        _request: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(unimplemented("Exec"))
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
        _request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Err(unimplemented("Events"))
    }
}
