//! holdfastd's process: arguments, config, its own log, the store,
//! containerd, the API socket and the signals that end it.
//!
//! Start-up order: config → tracing → store → containerd → socket → serve.
//! On SIGTERM or SIGINT the socket stops accepting, in-flight calls get
//! [`DRAIN_TIMEOUT`] to finish, the socket file is removed; with
//! `live_restore` (the default) containers keep running, without it each
//! running container is stopped with its own signal and timeout within the
//! shutdown deadline ([`crate::stop`]).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use holdfast_api::v1::containers_server::ContainersServer;
use holdfast_api::v1::ContainerStatus;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::containerd::Containerd;
use crate::manager::Manager;
use crate::server::{self, Service};
use crate::store::Store;

/// How long holdfastd tries to reach containerd at start-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight calls may run on after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The API socket's mode: owner and group.
pub const SOCKET_MODE: u32 = 0o660;

/// holdfastd's command line.
#[derive(Debug, Parser)]
#[command(
    name = "holdfastd",
    version,
    about = "keeps Linux containers running through containerd and holdfastd restarts"
)]
pub struct Args {
    /// The config file (TOML). Default: /etc/holdfast/holdfastd.toml, where
    /// a missing file means the defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Parses the arguments, reads the config and runs holdfastd until a
/// shutdown signal.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).with_context(|| {
        format!(
            "load config {}",
            args.config
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_CONFIG_PATH))
                .display()
        )
    })?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("holdfastd")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(run(config))
}

/// holdfastd's own log on stderr, at the config's level.
fn init_tracing(config: &Config) {
    let result = tracing_subscriber::fmt()
        .with_max_level(config.log_level.as_tracing())
        .with_writer(std::io::stderr)
        .try_init();
    if let Err(e) = result {
        eprintln!("holdfastd: tracing already initialised: {e}");
    }
}

/// Runs holdfastd with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handle SIGINT")?;

    let root = config.root.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_in_root(&root))
        .await
        .context("open the store")??;
    let containerd = Containerd::connect(
        &config.containerd.address,
        &config.containerd.namespace,
        CONNECT_TIMEOUT,
    )
    .await?;
    let manager = Arc::new(Manager::new(
        config.clone(),
        Arc::new(store),
        containerd.clone(),
    ));
    let task_events =
        crate::events::spawn_containerd_events(containerd, manager.event_hub().clone());

    let listener = bind(&config.socket).await?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ContainersServer<Service>>()
        .await;
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(server::reflection()?)
        .add_service(Service::new(manager.clone()).into_server());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(router.serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    info!(socket = %config.socket.display(), "serving");

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        result = &mut serving => {
            remove_socket(&config.socket);
            result.context("the server task")??;
            bail!("the server ended without a shutdown signal");
        }
    };
    info!(signal = signal_name, "shutting down");
    let _ = stop_tx.send(());
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut serving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "the server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "the server task failed"),
        Err(_) => {
            warn!(timeout = ?DRAIN_TIMEOUT, "calls still running; dropping them");
            serving.abort();
        }
    }
    remove_socket(&config.socket);
    task_events.abort();

    if config.live_restore {
        info!("live restore: leaving the containers running");
    } else {
        stop_all(&manager).await;
    }
    info!("holdfastd exited");
    Ok(())
}

/// Binds the API socket: creates its folder, removes a stale socket file
/// (refusing if another process answers on it), sets mode 0660.
async fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create the socket folder {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                bail!(
                    "{} is in use: is another holdfastd running?",
                    socket.display()
                );
            }
            info!(socket = %socket.display(), "removing a stale socket");
            std::fs::remove_file(socket)
                .with_context(|| format!("remove the stale socket {}", socket.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok(listener)
}

fn remove_socket(socket: &Path) {
    if let Err(e) = std::fs::remove_file(socket) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(socket = %socket.display(), error = %e, "remove the socket");
        }
    }
}

/// Stops every running container in parallel, each with its own stop
/// signal and timeout, within the shutdown deadline.
async fn stop_all(manager: &Arc<Manager>) {
    let running = match manager.list(false).await {
        Ok(list) => list,
        Err(e) => {
            warn!(error = %e, "cannot list containers to stop them");
            return;
        }
    };
    let timeouts: Vec<i64> = running
        .iter()
        .filter_map(|c| c.spec.as_ref().map(|s| s.stop_timeout_seconds))
        .collect();
    let deadline =
        crate::stop::effective_shutdown_deadline(manager.config().shutdown_timeout, &timeouts);
    let stops = running
        .into_iter()
        .filter(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.status == ContainerStatus::Running as i32)
        })
        .filter_map(|c| c.spec.map(|s| s.name))
        .map(|name| {
            let manager = manager.clone();
            async move {
                if let Err(e) = manager.stop(&name, None).await {
                    warn!(container = %name, error = %e, "stop at shutdown failed");
                }
            }
        });
    let all = futures::future::join_all(stops);
    info!(?deadline, "live restore off: stopping the containers");
    match deadline {
        None => {
            all.await;
        }
        Some(d) => {
            if tokio::time::timeout(d, all).await.is_err() {
                warn!(deadline = ?d, "containers still stopping at the shutdown deadline");
            }
        }
    }
}
