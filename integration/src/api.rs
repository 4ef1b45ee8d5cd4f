//! containerd's own gRPC API (through `containerd-client`), for what `ctr`
//! cannot do with a runtime other than `io.containerd.runc.*`: it sends no
//! checkpoint options to other runtimes (`--exit`, `--image-path` and
//! `--work-path` are dropped), and it has no command that creates a task of
//! a `--rootfs` container from a checkpoint.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::{
    CheckpointTaskRequest, CreateTaskRequest, GetImageRequest, ReadContentRequest, StartRequest,
};
use containerd_client::tonic::{self, Request};
pub use containerd_client::types::Descriptor;
use containerd_client::{with_namespace, Client};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;

use crate::Containerd;

/// The media type of a checkpoint's CRIU images in containerd's content
/// store (a tar of the image folder).
pub const CHECKPOINT_MEDIA_TYPE: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";
/// The type URL containerd gives runc's checkpoint options.
pub const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";

/// A gRPC error reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The gRPC code, e.g. `InvalidArgument`, `NotFound`.
    pub code: tonic::Code,
    /// containerd's message.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// A blocking client of one fixture's containerd, in its namespace.
pub struct Api {
    rt: tokio::runtime::Runtime,
    client: Client,
    ns: String,
}

impl Api {
    /// Connects to the fixture's containerd.
    pub fn connect(cd: &Containerd) -> Result<Api> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime for the containerd client")?;
        let address = cd.address();
        let client = rt
            .block_on(Client::from_path(&address))
            .with_context(|| format!("connect to containerd at {}", address.display()))?;
        Ok(Api {
            rt,
            client,
            ns: cd.namespace().to_string(),
        })
    }

    /// Tasks.Checkpoint of task `id`, with runc's checkpoint options when
    /// given; the descriptors containerd stored the checkpoint as (none
    /// when the images went to the options' `image_path`).
    pub fn checkpoint(
        &self,
        id: &str,
        options: Option<&CheckpointOptions>,
    ) -> Result<Vec<Descriptor>, ApiError> {
        let options = options.map(|o| prost_types::Any {
            type_url: CHECKPOINT_OPTIONS_TYPE.to_string(),
            value: o.write_to_bytes().unwrap_or_default(),
        });
        let req = CheckpointTaskRequest {
            container_id: id.to_string(),
            options,
            ..Default::default()
        };
        let mut tasks = self.client.tasks();
        let resp = self
            .rt
            .block_on(tasks.checkpoint(with_namespace!(req, self.ns)))?;
        Ok(resp.into_inner().descriptors)
    }

    /// Tasks.Create of task `id` (its container exists) from the
    /// checkpoint `checkpoint`, with stdout and stderr to `log_uri`; the
    /// pid it answers.
    pub fn create_from(
        &self,
        id: &str,
        checkpoint: &Descriptor,
        log_uri: &str,
    ) -> Result<u32, ApiError> {
        let req = CreateTaskRequest {
            container_id: id.to_string(),
            stdout: log_uri.to_string(),
            stderr: log_uri.to_string(),
            checkpoint: Some(checkpoint.clone()),
            ..Default::default()
        };
        let mut tasks = self.client.tasks();
        let resp = self
            .rt
            .block_on(tasks.create(with_namespace!(req, self.ns)))?;
        Ok(resp.into_inner().pid)
    }

    /// Tasks.Start of task `id`'s init; its pid.
    pub fn start(&self, id: &str) -> Result<u32, ApiError> {
        let req = StartRequest {
            container_id: id.to_string(),
            ..Default::default()
        };
        let mut tasks = self.client.tasks();
        let resp = self
            .rt
            .block_on(tasks.start(with_namespace!(req, self.ns)))?;
        Ok(resp.into_inner().pid)
    }

    /// The blob `digest` of the content store.
    pub fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let req = ReadContentRequest {
            digest: digest.to_string(),
            ..Default::default()
        };
        let mut content = self.client.content();
        self.rt.block_on(async {
            let mut stream = content
                .read(with_namespace!(req, self.ns))
                .await
                .map_err(ApiError::from)
                .with_context(|| format!("read content {digest}"))?
                .into_inner();
            let mut data = Vec::new();
            while let Some(msg) = stream
                .message()
                .await
                .map_err(ApiError::from)
                .with_context(|| format!("read content {digest}"))?
            {
                data.extend_from_slice(&msg.data);
            }
            Ok(data)
        })
    }

    /// The CRIU images of the checkpoint image `name` (what `ctr tasks
    /// checkpoint` made): the index's entry of [`CHECKPOINT_MEDIA_TYPE`].
    pub fn checkpoint_of_image(&self, name: &str) -> Result<Descriptor> {
        let req = GetImageRequest {
            name: name.to_string(),
        };
        let mut images = self.client.images();
        let image = self
            .rt
            .block_on(images.get(with_namespace!(req, self.ns)))
            .map_err(ApiError::from)
            .with_context(|| format!("get image {name}"))?
            .into_inner()
            .image
            .with_context(|| format!("image {name} is empty"))?;
        let target = image
            .target
            .with_context(|| format!("image {name} has no target"))?;
        let index: serde_json::Value = serde_json::from_slice(&self.read_content(&target.digest)?)
            .with_context(|| format!("the index of image {name}"))?;
        let Some(manifests) = index["manifests"].as_array() else {
            bail!("the index of image {name} has no manifests: {index}");
        };
        for m in manifests {
            if m["mediaType"] == CHECKPOINT_MEDIA_TYPE {
                return Ok(Descriptor {
                    media_type: CHECKPOINT_MEDIA_TYPE.to_string(),
                    digest: m["digest"].as_str().unwrap_or_default().to_string(),
                    size: m["size"].as_i64().unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
        bail!("image {name} holds no {CHECKPOINT_MEDIA_TYPE}: {index}")
    }
}

/// runc's checkpoint options: stop the task after the dump (`exit`) or
/// leave it running, with CRIU's work files in `work`.
pub fn checkpoint_options(exit: bool, work: Option<&Path>) -> CheckpointOptions {
    CheckpointOptions {
        exit,
        work_path: work.map(|w| w.display().to_string()).unwrap_or_default(),
        ..Default::default()
    }
}
