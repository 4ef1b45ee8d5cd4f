//! The shim binary's three roles, as containerd invokes them:
//!
//! - `start`: bind the task socket, spawn the long-lived shim with the
//!   listener inherited, print the socket address and exit;
//! - `delete`: clean up after a shim that is gone (runc state, mounts);
//! - no action: serve the task API until told to shut down.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::{parse, socket_address, Flags};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::Server;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::cri;
use crate::error::{Error, Result};
use crate::options::{ShimOptions, ShimPer};
use crate::publisher::{timestamp, RemotePublisher};
use crate::reaper::Reaper;
use crate::runc::RUNC_ROOT;
use crate::service::TaskService;
use crate::shim::TaskShim;
use crate::{logging, sys};

/// The environment variable naming the inherited listener fd.
const LISTEN_FD_ENV: &str = "HOLDFAST_SHIM_LISTEN_FD";
/// The task service name containerd 1.6/1.7 call.
const TASK_V2: &str = "containerd.task.v2.Task";
/// The same service under containerd 2.x's name.
const TASK_V3: &str = "containerd.task.v3.Task";
/// The runc binary (looked up on PATH).
const RUNC: &str = "runc";

/// Runs the shim with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match parse(args.get(1..).unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-shim-v2: {e}");
            return 2;
        }
    };
    if flags.version {
        println!(
            "containerd-shim-shim-v2 (holdfast) version {}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    let res = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => serve(&flags),
        other => Err(Error::InvalidArgument(format!("unknown action {other:?}"))),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-shim-v2 {}: {e}", flags.action);
            1
        }
    }
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// The runtime options containerd writes to `start`'s stdin (the
/// container's, marshalled as a protobuf `Any`); defaults when there are
/// none or they do not parse (Create then reports what is wrong).
fn start_options() -> ShimOptions {
    use std::io::{IsTerminal, Read};
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return ShimOptions::default();
    }
    let mut bytes = Vec::new();
    if let Err(e) = (&mut stdin).take(1 << 20).read_to_end(&mut bytes) {
        tracing::debug!(error = %e, "read runtime options from stdin");
        return ShimOptions::default();
    }
    if bytes.is_empty() {
        return ShimOptions::default();
    }
    Any::parse_from_bytes(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("runtime options on stdin: {e}")))
        .and_then(|any| ShimOptions::from_any(Some(&any)))
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "runtime options; using defaults to start");
            ShimOptions::default()
        })
}

/// The tasks one shim serves: with `shim_per = "pod"` (the default), every
/// task of a Kubernetes pod (CRI's sandbox id in the spec's annotations),
/// as the Go runc shim groups them; else the task alone.
fn grouping(flags: &Flags, bundle: &Path) -> String {
    if start_options().shim_per == ShimPer::Pod {
        let annotations = cri::bundle_annotations(bundle);
        if let Some(pod) = cri::pod_of(&annotations) {
            if crate::validate::id("sandbox", pod).is_ok() {
                return pod.to_string();
            }
        }
    }
    flags.id.clone()
}

/// `start`: called by containerd with the bundle as working directory.
fn start(flags: &Flags) -> Result<()> {
    crate::validate::id("task", &flags.id)?;
    let cwd = std::env::current_dir().map_err(|e| Error::io("read working directory", e))?;
    let grouping = grouping(flags, &cwd);
    let address = socket_address(&flags.address, &flags.namespace, &grouping);
    let path = socket_path(&address).to_string();
    if let Some(dir) = Path::new(&path).parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                // A shim already serves this group: reuse it.
                std::fs::write(cwd.join("address"), &address)
                    .map_err(|e| Error::io("write address file", e))?;
                print!("{address}");
                return Ok(());
            }
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("remove stale socket {path}"), e))?;
            UnixListener::bind(&path).map_err(|e| Error::io(format!("bind {path}"), e))?
        }
        Err(e) => return Err(Error::io(format!("bind {path}"), e)),
    };
    // Hand the bound listener to the child: no window where containerd could
    // connect before the shim listens.
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| Error::io("clear FD_CLOEXEC on the listener", e.into()))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find own executable", e))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(&cwd)
        .args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", &address])
        .env(LISTEN_FD_ENV, listener.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if flags.debug {
        cmd.arg("-debug");
    }
    if let Err(e) = cmd.spawn() {
        let _ = std::fs::remove_file(&path);
        return Err(Error::io("spawn the shim", e));
    }
    std::fs::write(cwd.join("address"), &address)
        .map_err(|e| Error::io("write address file", e))?;
    print!("{address}");
    Ok(())
}

/// `delete`: containerd cleans up after a shim it cannot reach.
fn delete(flags: &Flags) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("read working directory", e))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    crate::validate::id("task", &flags.id)?;
    let root = Path::new(RUNC_ROOT).join(&flags.namespace);
    let out = Command::new(RUNC)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", &flags.id])
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = &out {
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr);
            if !msg.contains("does not exist") && !msg.contains("not exist") {
                eprintln!("runc delete {}: {}", flags.id, msg.trim());
            }
        }
    }
    crate::container::unmount_rootfs(&bundle);
    let resp = DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(timestamp(OffsetDateTime::now_utc())),
        ..Default::default()
    };
    let bytes = resp
        .write_to_bytes()
        .map_err(|e| Error::Other(format!("encode delete response: {e}")))?;
    std::io::Write::write_all(&mut std::io::stdout(), &bytes)
        .map_err(|e| Error::io("write delete response", e))
}

/// The long-lived shim.
fn serve(flags: &Flags) -> Result<()> {
    // Own session: containerd's process group may be signalled as a whole.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::io("become child subreaper", e.into()))?;
    let bundle = std::env::current_dir().map_err(|e| Error::io("read working directory", e))?;
    logging::init(&bundle, flags.debug);
    let fd: i32 = std::env::var(LISTEN_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::InvalidArgument(format!("{LISTEN_FD_ENV} is not set")))?;
    // Single-threaded still: nothing reads the environment concurrently.
    std::env::remove_var(LISTEN_FD_ENV);
    let listener: UnixListener = sys::adopt_inherited_fd(fd)
        .map_err(|e| Error::io("adopt the task socket", e))?
        .into();
    let _ = fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| Error::InvalidArgument("TTRPC_ADDRESS is not set".into()))?;

    sys::limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking threads (console sockets) are rare: let them go quickly.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    rt.block_on(async move {
        let reaper = Reaper::new();
        reaper
            .spawn_sigchld_loop()
            .map_err(|e| Error::io("watch SIGCHLD", e))?;
        ignore_termination_signals()?;
        let publisher = RemotePublisher::start(&ttrpc_address, &flags.namespace);
        let shutdown = Arc::new(Notify::new());
        let shim = Arc::new(TaskShim::new(
            &flags.namespace,
            RUNC,
            reaper,
            Arc::new(publisher.clone()),
            shutdown.clone(),
        )
        .with_socket(socket_path(&flags.socket))
        .with_containerd_address(&flags.address));
        let task: Arc<dyn Task + Send + Sync> = Arc::new(TaskService::new(shim));
        let v2 = create_task(task.clone());
        let v3 = create_task(task)
            .into_iter()
            .map(|(name, svc)| {
                let name = if name == TASK_V2 { TASK_V3.to_string() } else { name };
                (name, svc)
            })
            .collect();
        let listener = Listener::try_from(listener).map_err(|e| Error::io("task socket", e))?;
        let mut server = Server::new()
            .add_listener(listener)
            .register_service(v2)
            .register_service(v3);
        server
            .start()
            .await
            .map_err(|e| Error::Other(format!("start ttrpc server: {e}")))?;
        tracing::info!(id = %flags.id, namespace = %flags.namespace, pid = std::process::id(), "shim serving");
        shutdown.notified().await;
        // Let the Shutdown reply go out and queued events reach containerd.
        publisher.flush(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = server.shutdown().await;
        // The socket was unlinked when shutdown began; what is at its path
        // now is the next shim's for the same id (a restore, a restart).
        Ok(())
    })
}

fn ignore_termination_signals() -> Result<()> {
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let mut s = signal(kind).map_err(|e| Error::io("install signal handler", e))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                tracing::info!(signal = ?kind, "ignoring signal: the shim exits when its tasks are deleted");
            }
        });
    }
    Ok(())
}
