//! The subcommands: each turns its arguments into requests, calls
//! holdfastd and prints the answer. Each returns the process's exit code.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{
    exec_request, exec_response, ContainerSpec, CreateRequest, EventsRequest, ExecRequest,
    ExecStart, InspectRequest, KillRequest, ListRequest, LogStream, LogsRequest, LogsResponse,
    RemoveRequest, Resize, Resources, RestartRequest, StartRequest, StopRequest, WaitRequest,
};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::args::{
    Cli, Command, EventsArgs, ExecArgs, KillArgs, LogsArgs, NamesArgs, PsArgs, RmArgs, RunArgs,
    SpecArgs, StopArgs,
};
use crate::error::{status_err, DaemonError};
use crate::{connect, output, parse, terminal};

/// A client of holdfastd's API.
pub type Client = ContainersClient<Channel>;

/// Connects to holdfastd and runs the command; returns the exit code.
pub async fn dispatch(cli: Cli) -> Result<i32> {
    let mut client = connect::connect(&cli.host).await?;
    let client = &mut client;
    match cli.command {
        Command::Run(args) => run(client, args).await,
        Command::Create(args) => create(client, args).await,
        Command::Start(args) => start(client, args).await,
        Command::Stop(args) => stop(client, args, false).await,
        Command::Restart(args) => stop(client, args, true).await,
        Command::Kill(args) => kill(client, args).await,
        Command::Update(args) => crate::update::update(client, args).await,
        Command::Rm(args) => rm(client, args).await,
        Command::Ps(args) => ps(client, args).await,
        Command::Inspect(args) => inspect(client, args).await,
        Command::Logs(args) => logs(client, args).await,
        Command::Exec(args) => exec(client, args).await,
        Command::Wait(args) => wait(client, args).await,
        Command::Events(args) => events(client, args).await,
        Command::Checkpoint(command) => crate::checkpoint::checkpoint(client, command).await,
        Command::Restore(args) => crate::checkpoint::restore(client, args).await,
        Command::Export(args) => crate::transfer::export(client, args).await,
        Command::Import(args) => crate::transfer::import(client, args).await,
        Command::Migrate(args) => crate::transfer::migrate(client, args).await,
    }
}

/// The spec of `run`/`create`; `suffix` makes a default name unique.
pub fn build_spec(args: SpecArgs, suffix: u32) -> Result<ContainerSpec> {
    let mut rest = args.args.into_iter();
    let (image, rootfs) = match args.rootfs {
        Some(rootfs) if rootfs.starts_with('/') => (String::new(), rootfs),
        Some(rootfs) => bail!("--rootfs: {rootfs:?} is not an absolute path"),
        None => match rest.next() {
            Some(image) => (image, String::new()),
            None => bail!("an IMAGE or --rootfs DIR is required"),
        },
    };
    let name = match args.name {
        Some(name) => name,
        None => parse::default_name(if image.is_empty() { &rootfs } else { &image }, suffix),
    };
    let resources = Resources {
        memory_bytes: args.memory.unwrap_or(0),
        cpus: args.cpus.unwrap_or(0.0),
        pids_limit: args.pids_limit.unwrap_or(0),
    };
    Ok(ContainerSpec {
        name,
        image,
        rootfs,
        command: rest.collect(),
        env: args.env,
        working_dir: args.workdir.unwrap_or_default(),
        mounts: args.volumes,
        labels: args.labels.into_iter().collect::<HashMap<_, _>>(),
        resources: Some(resources),
        restart: args.restart,
        auto_remove: args.rm,
        stop_signal: args.stop_signal.unwrap_or_default(),
        stop_timeout_seconds: args.stop_timeout.unwrap_or(10),
        tty: args.tty,
        stdin_open: args.interactive,
        checkpoint_schedule: args.schedule.schedule(),
    })
}

fn name_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

async fn create_container(client: &mut Client, args: SpecArgs) -> Result<ContainerSpec> {
    let spec = build_spec(args, name_suffix())?;
    let request = CreateRequest {
        spec: Some(spec.clone()),
    };
    client.create(request).await.map_err(status_err(None))?;
    Ok(spec)
}

async fn create(client: &mut Client, args: SpecArgs) -> Result<i32> {
    let spec = create_container(client, args).await?;
    println!("{}", spec.name);
    Ok(0)
}

async fn run(client: &mut Client, args: RunArgs) -> Result<i32> {
    let spec = create_container(client, args.spec).await?;
    let name = spec.name;
    client
        .start(StartRequest { name: name.clone() })
        .await
        .map_err(status_err(Some(&name)))?;
    if args.detach {
        println!("{name}");
        return Ok(0);
    }
    let mut waiter = client.clone();
    let wait_name = name.clone();
    let wait = tokio::spawn(async move { waiter.wait(WaitRequest { name: wait_name }).await });
    let request = LogsRequest {
        name: name.clone(),
        follow: true,
        ..Default::default()
    };
    let mut stream = client
        .logs(request)
        .await
        .map_err(status_err(Some(&name)))?
        .into_inner();
    // The follow ends once the task exited and all it wrote was printed
    // (or when --rm removed the container).
    while let Ok(Some(record)) = stream.message().await {
        print_record(&record, None)?;
    }
    let exit = wait.await.context("waiting for the container")?;
    match exit {
        Ok(response) => Ok(response.into_inner().exit_code),
        Err(status) if status.code() == Code::NotFound && spec.auto_remove => {
            bail!("{name} was removed before its exit code could be read")
        }
        Err(status) => Err(DaemonError::from_status(&status, Some(&name)).into()),
    }
}

/// Runs `f` for each name, printing each error but the last, which it
/// returns; prints the names that succeeded when `echo` is set.
pub(crate) async fn for_each<F>(
    client: &mut Client,
    names: &[String],
    echo: bool,
    mut f: F,
) -> Result<i32>
where
    F: for<'a> FnMut(
        &'a mut Client,
        String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>,
    >,
{
    let mut last: Option<anyhow::Error> = None;
    for name in names {
        match f(client, name.clone()).await {
            Ok(()) if echo => println!("{name}"),
            Ok(()) => {}
            Err(e) => {
                if let Some(previous) = last.replace(e) {
                    eprintln!("Error: {previous:#}");
                }
            }
        }
    }
    last.map_or(Ok(0), Err)
}

async fn start(client: &mut Client, args: NamesArgs) -> Result<i32> {
    for_each(client, &args.names, true, |client, name| {
        Box::pin(async move {
            let request = StartRequest { name: name.clone() };
            client
                .start(request)
                .await
                .map_err(status_err(Some(&name)))?;
            Ok(())
        })
    })
    .await
}

async fn stop(client: &mut Client, args: StopArgs, restart: bool) -> Result<i32> {
    let timeout = args.time;
    for_each(client, &args.names, true, move |client, name| {
        Box::pin(async move {
            let result = if restart {
                let request = RestartRequest {
                    name: name.clone(),
                    timeout_seconds: timeout,
                };
                client.restart(request).await.map(drop)
            } else {
                let request = StopRequest {
                    name: name.clone(),
                    timeout_seconds: timeout,
                };
                client.stop(request).await.map(drop)
            };
            result.map_err(status_err(Some(&name)))
        })
    })
    .await
}

async fn kill(client: &mut Client, args: KillArgs) -> Result<i32> {
    let signal = args.signal.unwrap_or_default();
    let all = args.all;
    for_each(client, &args.names, true, move |client, name| {
        let signal = signal.clone();
        Box::pin(async move {
            let request = KillRequest {
                name: name.clone(),
                signal,
                all,
            };
            client
                .kill(request)
                .await
                .map_err(status_err(Some(&name)))?;
            Ok(())
        })
    })
    .await
}

async fn rm(client: &mut Client, args: RmArgs) -> Result<i32> {
    let force = args.force;
    for_each(client, &args.names, true, move |client, name| {
        Box::pin(async move {
            let request = RemoveRequest {
                name: name.clone(),
                force,
            };
            client
                .remove(request)
                .await
                .map_err(status_err(Some(&name)))?;
            Ok(())
        })
    })
    .await
}

async fn wait(client: &mut Client, args: NamesArgs) -> Result<i32> {
    for_each(client, &args.names, false, |client, name| {
        Box::pin(async move {
            let request = WaitRequest { name: name.clone() };
            let response = client
                .wait(request)
                .await
                .map_err(status_err(Some(&name)))?;
            println!("{}", response.into_inner().exit_code);
            Ok(())
        })
    })
    .await
}

async fn ps(client: &mut Client, args: PsArgs) -> Result<i32> {
    let request = ListRequest { all: args.all };
    let containers = client
        .list(request)
        .await
        .map_err(status_err(None))?
        .into_inner()
        .containers;
    if args.json {
        print!("{}", output::containers_json(&containers));
    } else {
        print!(
            "{}",
            output::ps_table(&containers, OffsetDateTime::now_utc())
        );
    }
    Ok(0)
}

async fn inspect(client: &mut Client, args: NamesArgs) -> Result<i32> {
    let mut found = Vec::new();
    let mut last: Option<anyhow::Error> = None;
    for name in &args.names {
        let request = InspectRequest { name: name.clone() };
        match client.inspect(request).await {
            Ok(response) => found.extend(response.into_inner().container),
            Err(status) => {
                if let Some(previous) = last.replace(status_err(Some(name))(status)) {
                    eprintln!("Error: {previous:#}");
                }
            }
        }
    }
    print!("{}", output::containers_json(&found));
    last.map_or(Ok(0), Err)
}

/// Writes one log record to stdout or stderr (by its stream), prefixed
/// with times when `prefixer` is given; a gap is said on stderr.
fn print_record(record: &LogsResponse, prefixer: Option<&mut output::LinePrefixer>) -> Result<()> {
    if record.gap {
        let stream = if record.stream == LogStream::Stderr as i32 {
            "stderr"
        } else {
            "stdout"
        };
        eprintln!("holdfast: some {stream} output is missing here (the journal lost it)");
        if let Some(p) = prefixer {
            p.end_line(record.stream);
        }
        return Ok(());
    }
    let data = match prefixer {
        Some(p) => {
            std::borrow::Cow::Owned(p.prefix(record.stream, record.time.as_ref(), &record.data))
        }
        None => std::borrow::Cow::Borrowed(record.data.as_slice()),
    };
    let result = if record.stream == LogStream::Stderr as i32 {
        let mut err = std::io::stderr().lock();
        err.write_all(&data).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&data).and_then(|()| out.flush())
    };
    result.context("writing the container's output")
}

async fn logs(client: &mut Client, args: LogsArgs) -> Result<i32> {
    let since = match &args.since {
        Some(s) => Some(output::to_timestamp(
            parse::since(s, OffsetDateTime::now_utc()).map_err(|e| anyhow!("--since: {e}"))?,
        )),
        None => None,
    };
    let request = LogsRequest {
        name: args.name.clone(),
        follow: args.follow,
        tail: args.tail.unwrap_or(0),
        since,
    };
    let name = args.name;
    let mut stream = client
        .logs(request)
        .await
        .map_err(status_err(Some(&name)))?
        .into_inner();
    let mut prefixer = args.timestamps.then(output::LinePrefixer::default);
    while let Some(record) = stream.message().await.map_err(status_err(Some(&name)))? {
        print_record(&record, prefixer.as_mut())?;
    }
    Ok(0)
}

async fn exec(client: &mut Client, args: ExecArgs) -> Result<i32> {
    let (width, height) = if args.tty {
        terminal::size().unwrap_or((80, 24))
    } else {
        (0, 0)
    };
    let start = ExecStart {
        name: args.name.clone(),
        command: args.command,
        env: args.env,
        tty: args.tty,
        stdin: args.interactive,
        working_dir: args.workdir.unwrap_or_default(),
        width,
        height,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecRequest>(16);
    let first = ExecRequest {
        msg: Some(exec_request::Msg::Start(start)),
    };
    tx.send(first)
        .await
        .map_err(|_| anyhow!("exec: request stream closed"))?;
    let name = args.name;
    let mut responses = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_err(Some(&name)))?
        .into_inner();
    // Raw mode once holdfastd accepted the exec; restored when dropped.
    let raw = if args.tty {
        terminal::RawMode::enable().context("raw terminal mode")?
    } else {
        None
    };
    if args.interactive {
        tokio::spawn(forward_stdin(tx.clone()));
    }
    if args.tty {
        tokio::spawn(forward_resizes(tx.clone()));
    }
    let result = exec_output(&mut responses, &name).await;
    drop(raw);
    drop(tx);
    result
}

async fn exec_output(
    responses: &mut Streaming<holdfast_api::v1::ExecResponse>,
    name: &str,
) -> Result<i32> {
    while let Some(response) = responses.message().await.map_err(status_err(Some(name)))? {
        match response.msg {
            Some(exec_response::Msg::Stdout(data)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)
                    .and_then(|()| out.flush())
                    .context("writing stdout")?;
            }
            Some(exec_response::Msg::Stderr(data)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&data)
                    .and_then(|()| err.flush())
                    .context("writing stderr")?;
            }
            Some(exec_response::Msg::ExitCode(code)) => return Ok(code),
            None => {}
        }
    }
    bail!("holdfastd ended the exec without an exit code")
}

/// Sends stdin to the exec, then `close_stdin` at its end.
async fn forward_stdin(tx: tokio::sync::mpsc::Sender<ExecRequest>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let msg = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => exec_request::Msg::CloseStdin(true),
            Ok(n) => exec_request::Msg::Stdin(buf[..n].to_vec()),
        };
        let close = matches!(msg, exec_request::Msg::CloseStdin(_));
        if tx.send(ExecRequest { msg: Some(msg) }).await.is_err() || close {
            return;
        }
    }
}

/// Sends the terminal's size on every SIGWINCH.
async fn forward_resizes(tx: tokio::sync::mpsc::Sender<ExecRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((width, height)) = terminal::size() {
            let msg = exec_request::Msg::Resize(Resize { width, height });
            if tx.send(ExecRequest { msg: Some(msg) }).await.is_err() {
                return;
            }
        }
    }
}

async fn events(client: &mut Client, args: EventsArgs) -> Result<i32> {
    let name = args.name.unwrap_or_default();
    let request = EventsRequest { name: name.clone() };
    let filter = (!name.is_empty()).then_some(name.as_str());
    let mut stream = client
        .events(request)
        .await
        .map_err(status_err(filter))?
        .into_inner();
    while let Some(event) = stream.message().await.map_err(status_err(filter))? {
        println!("{}", output::event_line(&event));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn spec_of(args: &[&str]) -> Result<ContainerSpec> {
        let cli = Cli::try_parse_from(std::iter::once("holdfast").chain(args.iter().copied()))?;
        let Command::Create(spec) = cli.command else {
            bail!("not create")
        };
        build_spec(spec, 0x1234)
    }

    #[test]
    fn specs_carry_every_flag() {
        let spec = spec_of(&[
            "create",
            "--name",
            "web",
            "--restart",
            "always",
            "-e",
            "A=1",
            "-v",
            "/d:/data:ro",
            "--label",
            "app=web",
            "--memory",
            "1g",
            "--cpus",
            "0.5",
            "--pids-limit",
            "100",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "30",
            "-w",
            "/srv",
            "-t",
            "-i",
            "alpine",
            "nginx",
            "-g",
            "daemon off;",
        ])
        .unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.image, "alpine");
        assert_eq!(spec.rootfs, "");
        assert_eq!(spec.command, ["nginx", "-g", "daemon off;"]);
        assert_eq!(spec.env, ["A=1"]);
        assert_eq!(spec.mounts.len(), 1);
        assert_eq!(spec.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            spec.resources,
            Some(Resources {
                memory_bytes: 1 << 30,
                cpus: 0.5,
                pids_limit: 100
            })
        );
        assert_eq!(spec.stop_signal, "SIGINT");
        assert_eq!(spec.stop_timeout_seconds, 30);
        assert_eq!(spec.working_dir, "/srv");
        assert!(spec.tty && spec.stdin_open && !spec.auto_remove);
    }

    #[test]
    fn specs_need_an_image_or_an_absolute_rootfs() {
        let spec = spec_of(&["create", "--rm", "--rootfs", "/roots/busybox", "sh"]).unwrap();
        assert_eq!(
            (spec.image.as_str(), spec.rootfs.as_str()),
            ("", "/roots/busybox")
        );
        assert_eq!(spec.name, "busybox-00001234");
        assert_eq!(spec.command, ["sh"]);
        assert!(spec.auto_remove);
        assert_eq!(spec.stop_timeout_seconds, 10);
        assert!(spec_of(&["create"])
            .unwrap_err()
            .to_string()
            .contains("IMAGE or --rootfs"));
        assert!(spec_of(&["create", "--rootfs", "r"])
            .unwrap_err()
            .to_string()
            .contains("--rootfs"));
    }
}
