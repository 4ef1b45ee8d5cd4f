//! Migration of a running container to another holdfastd: this holdfastd
//! is a client of the target's `Import` and `Restore`.
//!
//! 1. The target is reached and asked whether the name is free before the
//!    container is touched (an unreachable target or a taken name changes
//!    nothing here).
//! 2. The container is checkpointed without `leave_running`: it stops, so
//!    nothing it does after the dump is lost.
//! 3. The checkpoint is exported straight into the target's `Import` (no
//!    file in between), then the target restores it.
//! 4. Only once the target answered that it runs is the container removed
//!    here (unless `keep_source`: it stays, stopped at the checkpoint, with
//!    the checkpoint). If step 3 fails, what the target made is removed and
//!    the container is restored here from the checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{
    import_request, Container, ImportOptions, ImportRequest, InspectRequest, RemoveRequest,
    RestoreRequest,
};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{info, info_span, warn, Instrument};

use super::checkpoint::{generated_name, CheckpointRequest};
use super::Manager;
use crate::error::{Error, Result};
use crate::validate::validate_name;

/// What [`Manager::migrate`] is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateRequest {
    /// The container to move (running).
    pub container: String,
    /// The target holdfastd's socket, `unix:///path`.
    pub target: String,
    /// The name on the target (empty: the same).
    pub name: String,
    /// Keep the container here after it runs on the target.
    pub keep_source: bool,
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    /// The container as the target has it (running).
    pub container: Container,
    /// The checkpoint it moved with.
    pub checkpoint: String,
    /// Bytes of archive sent.
    pub bytes: u64,
}

/// The socket path of a `unix:///path` target; InvalidArgument otherwise.
pub fn target_socket(target: &str) -> Result<PathBuf> {
    let path = target.strip_prefix("unix://").ok_or_else(|| {
        Error::invalid(
            format!("target {target:?}"),
            "must be unix:///path/to/holdfastd.sock",
        )
    })?;
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::invalid(
            format!("target {target:?}"),
            "the socket path must be absolute",
        ));
    }
    Ok(PathBuf::from(path))
}

/// A client of the holdfastd at `target`; Unavailable when it cannot be
/// reached.
async fn connect(target: &str) -> Result<ContainersClient<Channel>> {
    let path = target_socket(target)?;
    let endpoint = Endpoint::try_from("http://[::]:0")
        .map_err(|e| Error::Internal(format!("endpoint: {e}")))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            Error::Unavailable(format!("cannot reach holdfastd at {target}: {cause}"))
        })?;
    Ok(ContainersClient::new(channel))
}

impl Manager {
    /// Moves a running container to the holdfastd at `req.target` (see the
    /// module docs).
    pub async fn migrate(self: &Arc<Self>, req: MigrateRequest) -> Result<Migrated> {
        validate_name(&req.container)?;
        let name = if req.name.is_empty() {
            req.container.clone()
        } else {
            req.name.clone()
        };
        validate_name(&name)?;
        target_socket(&req.target)?;
        let span =
            info_span!("migrate", container = %req.container, target = %req.target, name = %name);
        self.migrate_inner(req, name).instrument(span).await
    }

    async fn migrate_inner(
        self: &Arc<Self>,
        req: MigrateRequest,
        name: String,
    ) -> Result<Migrated> {
        let container = req.container.as_str();
        self.record(container).await?;
        let mut target = connect(&req.target).await?;
        match target.inspect(InspectRequest { name: name.clone() }).await {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    what: format!("container {name:?} on {}", req.target),
                })
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::remote(&req.target, "inspect", s)),
        }
        let checkpoint = generated_name(std::time::SystemTime::now());
        self.create_checkpoint(CheckpointRequest {
            container: container.to_owned(),
            name: checkpoint.clone(),
            leave_running: false,
            ..Default::default()
        })
        .await?;
        info!(checkpoint = %checkpoint, "source stopped at its checkpoint; sending it");
        let moved = self
            .send_and_restore(&mut target, &req.target, container, &checkpoint, &name)
            .await;
        let (remote, bytes) = match moved {
            Ok(ok) => ok,
            Err(e) => {
                warn!(error = %e, "migration failed; restoring the container here");
                if let Err(e2) = self.restore(container, &checkpoint).await {
                    warn!(error = %e2, "restoring the source after a failed migration");
                }
                return Err(e);
            }
        };
        info!(bytes, "the container runs on the target");
        self.event(container, "migrate", 0, &req.target);
        if !req.keep_source {
            self.remove(container, true).await?;
        }
        Ok(Migrated {
            container: remote,
            checkpoint,
            bytes,
        })
    }

    /// Streams the checkpoint into the target's Import and restores it
    /// there; on failure, removes what the target made.
    async fn send_and_restore(
        &self,
        target: &mut ContainersClient<Channel>,
        address: &str,
        container: &str,
        checkpoint: &str,
        name: &str,
    ) -> Result<(Container, u64)> {
        let export = self.export(container, checkpoint).await?;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(None::<Error>));
        let first = ImportRequest {
            msg: Some(import_request::Msg::Options(ImportOptions {
                name: name.to_owned(),
                rootfs: String::new(),
            })),
        };
        let data = {
            let (sent, failed) = (sent.clone(), failed.clone());
            export
                .take_while(move |chunk| {
                    let go = match chunk {
                        Ok(c) => {
                            sent.fetch_add(
                                c.data.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            true
                        }
                        Err(e) => {
                            if let Ok(mut slot) = failed.lock() {
                                *slot = Some(Error::Internal(format!("export: {e}")));
                            }
                            false
                        }
                    };
                    futures::future::ready(go)
                })
                .filter_map(|chunk| {
                    futures::future::ready(chunk.ok().map(|c| ImportRequest {
                        msg: Some(import_request::Msg::Data(c.data)),
                    }))
                })
        };
        let messages = futures::stream::iter([first]).chain(data);
        let imported = target.import(messages).await;
        if let Some(e) = failed.lock().ok().and_then(|mut slot| slot.take()) {
            // The archive was cut short: the target refused it.
            return Err(e);
        }
        imported.map_err(|s| Error::remote(address, "import", s))?;
        let restored = target
            .restore(RestoreRequest {
                container: name.to_owned(),
                checkpoint: checkpoint.to_owned(),
            })
            .await;
        match restored {
            Ok(r) => {
                let remote = r.into_inner().container.unwrap_or_default();
                Ok((remote, sent.load(std::sync::atomic::Ordering::Relaxed)))
            }
            Err(s) => {
                if let Err(s2) = target
                    .remove(RemoveRequest {
                        name: name.to_owned(),
                        force: true,
                    })
                    .await
                {
                    warn!(error = %s2.message(), "removing the import from the target");
                }
                Err(Error::remote(address, "restore", s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_unix_sockets_with_absolute_paths() {
        assert_eq!(
            target_socket("unix:///run/h.sock").ok(),
            Some(PathBuf::from("/run/h.sock"))
        );
        for bad in [
            "/run/h.sock",
            "tcp://1.2.3.4:1",
            "unix://rel.sock",
            "unix://",
            "",
        ] {
            let e = target_socket(bad).err();
            assert_eq!(
                e.map(|e| e.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad}"
            );
        }
    }
}
