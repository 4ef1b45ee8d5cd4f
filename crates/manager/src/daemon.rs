//! holdfastd's process: arguments, config, its own log, the store,
//! containerd, the API socket, the phased start-up and the signals.
//!
//! Start-up order: config → tracing → store → containerd → socket (health
//! NOT_SERVING, reads only) → phases 1-3 ([`Manager::start_up`]) → health
//! SERVING, `READY=1` to systemd. Teardown on SIGTERM or SIGINT runs in the
//! reverse order: health NOT_SERVING and mutations refused → the monitor
//! and pending restarts stop → with `live_restore` off, the containers are
//! stopped ([`Manager::shut_down`]) → the socket closes (in-flight calls get
//! [`DRAIN_TIMEOUT`]) and its file is removed → containerd's connection
//! and the store close. With `live_restore` on, every container, shim and
//! task is left untouched.
//!
//! SIGHUP reads the config file again: `live_restore`, `shutdown_timeout`
//! and `log_level` apply at once; `[log]` (but `log.dir`) applies to the
//! containers created from then on (existing ones keep their journal
//! settings, across restarts too); the log names the keys that need a
//! restart ([`crate::config::reload`]).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use holdfast_api::v1::containers_server::ContainersServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

use crate::config::{self, Config, DEFAULT_CONFIG_PATH};
use crate::containerd::Containerd;
use crate::gate::Gate;
use crate::manager::Manager;
use crate::notify;
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
            config_path(args.config.as_deref()).display()
        )
    })?;
    let levels = init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("holdfastd")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(run(config, args.config, levels))
}

fn config_path(arg: Option<&Path>) -> &Path {
    arg.unwrap_or(Path::new(DEFAULT_CONFIG_PATH))
}

/// Changes the level of holdfastd's own log at run time.
pub type LevelHandle = reload::Handle<LevelFilter, Registry>;

/// holdfastd's own log on stderr, at the config's level (changeable by
/// SIGHUP through the returned handle).
fn init_tracing(config: &Config) -> Option<LevelHandle> {
    let (filter, handle) =
        reload::Layer::new(LevelFilter::from_level(config.log_level.as_tracing()));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    match result {
        Ok(()) => Some(handle),
        Err(e) => {
            eprintln!("holdfastd: tracing already initialised: {e}");
            None
        }
    }
}

/// The signals holdfastd handles.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("handle SIGHUP")?,
        })
    }
}

/// The next SIGTERM or SIGINT.
async fn shutdown_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs holdfastd with `config` (read from `config_file`, read again on
/// SIGHUP) until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    config_file: Option<PathBuf>,
    levels: Option<LevelHandle>,
) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let mut config = config;

    notify::notify("STATUS=opening the store and connecting to containerd");
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
    set_health(&health_reporter, ServingStatus::NotServing).await;
    let api = Gate::new(
        Service::new(manager.clone()).into_server(),
        manager.watch_phase(),
    );
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(server::reflection()?)
        .add_service(api);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(router.serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    info!(socket = %config.socket.display(), "serving reads; starting up");
    notify::notify("STATUS=starting up: reconciling with containerd");

    let started = Instant::now();
    let outcome = tokio::select! {
        r = manager.start_up() => Ok(r),
        signal = shutdown_signal(&mut signals.term, &mut signals.int) => Err(signal),
    };
    let (monitor, failure) = match outcome {
        Ok(Ok((report, monitor))) => {
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                records = report.loaded,
                quarantined = report.quarantined.len(),
                adopted = report.adopted,
                exited_while_down = report.exited_while_down,
                orphans = report.orphans.len(),
                restarted = report.restarted,
                auto_removed = report.removed,
                "start-up done; serving"
            );
            set_health(&health_reporter, ServingStatus::Serving).await;
            notify::notify("READY=1\nSTATUS=serving");
            (Some(monitor), None)
        }
        Ok(Err(e)) => (None, Some(anyhow::Error::new(e).context("start-up"))),
        Err(signal) => {
            info!(signal, "shutdown signal during start-up");
            (None, None)
        }
    };

    let mut failure = failure;
    if monitor.is_some() {
        loop {
            tokio::select! {
                signal = shutdown_signal(&mut signals.term, &mut signals.int) => {
                    info!(signal, "shutting down");
                    break;
                }
                _ = signals.hup.recv() => reload(&mut config, config_file.as_deref(), levels.as_ref(), &manager),
                result = &mut serving => {
                    let why = match result {
                        Ok(Ok(())) => anyhow::anyhow!("the server ended without a shutdown signal"),
                        Ok(Err(e)) => anyhow::Error::new(e).context("the server"),
                        Err(e) => anyhow::Error::new(e).context("the server task"),
                    };
                    failure = Some(why);
                    break;
                }
            }
        }
    }

    // Teardown, in reverse order of start-up.
    notify::notify("STOPPING=1");
    set_health(&health_reporter, ServingStatus::NotServing).await;
    // Containers are stopped only by a holdfastd that finished starting:
    // after a failed or interrupted start-up they are left as found.
    let leave_running = config.live_restore || monitor.is_none();
    let report = manager
        .shut_down(monitor, leave_running, config.shutdown_timeout)
        .await;
    if !report.not_stopped.is_empty() {
        warn!(containers = ?report.not_stopped, "some containers could not be stopped");
    }
    let _ = stop_tx.send(());
    if !serving.is_finished() {
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "the server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "the server task failed"),
            Err(_) => {
                warn!(timeout = ?DRAIN_TIMEOUT, "calls still running; dropping them");
                serving.abort();
            }
        }
    }
    remove_socket(&config.socket);
    task_events.abort();
    drop(manager);
    match failure {
        Some(e) => {
            error!(error = %format!("{e:#}"), "holdfastd failed");
            Err(e)
        }
        None => {
            info!("holdfastd exited");
            Ok(())
        }
    }
}

/// Sets the health of the API and of the server as a whole ("").
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter
        .set_service_status(<ContainersServer<Service> as NamedService>::NAME, status)
        .await;
    reporter.set_service_status("", status).await;
}

/// SIGHUP: reads the config again and applies what can change live:
/// `live_restore` and `shutdown_timeout` (read at shutdown), `log_level`
/// (through `levels`) and the `[log]` defaults of new containers (given to
/// `manager`).
fn reload(
    current: &mut Config,
    file: Option<&Path>,
    levels: Option<&LevelHandle>,
    manager: &Manager,
) {
    let path = config_path(file);
    let new = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            warn!(config = %path.display(), error = %e, "SIGHUP: the config cannot be used; keeping the running one");
            return;
        }
    };
    let r = config::reload(current, new);
    if r.applied.contains(&"log_level") {
        if let Some(h) = levels {
            if let Err(e) = h.reload(LevelFilter::from_level(r.config.log_level.as_tracing())) {
                warn!(error = %e, "SIGHUP: cannot change the log level");
            }
        }
    }
    if r.applied.contains(&"log") {
        manager.set_log_defaults(r.config.log.clone());
    }
    info!(
        config = %path.display(),
        applied = ?r.applied,
        needs_restart = ?r.needs_restart,
        live_restore = r.config.live_restore,
        shutdown_timeout = ?r.config.shutdown_timeout,
        "SIGHUP: config reloaded"
    );
    if !r.needs_restart.is_empty() {
        warn!(keys = ?r.needs_restart, "SIGHUP: these changes take effect only when holdfastd restarts");
    }
    *current = r.config;
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
