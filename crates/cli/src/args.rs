//! The command line, with clap's derive API.

use clap::{Args, Parser, Subcommand};
use holdfast_api::v1::{CheckpointSchedule, Mount, RestartPolicy};

use crate::parse;

/// holdfastd's default socket.
pub const DEFAULT_HOST: &str = "unix:///run/holdfast/holdfastd.sock";

/// `holdfast`: run and keep containers with holdfastd.
///
/// Exit status: 0 on success; the container's or process's exit code for
/// `run` (without -d) and `exec`; 125 when holdfastd refused or failed a
/// request; 1 for other errors (e.g. holdfastd unreachable); 2 for bad
/// usage.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, long_about = None)]
pub struct Cli {
    /// holdfastd's socket, e.g. unix:///run/holdfast/holdfastd.sock.
    #[arg(long, global = true, env = "HOLDFAST_HOST", default_value = DEFAULT_HOST, value_name = "ADDRESS")]
    pub host: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a container; without -d, print its output until it
    /// exits and exit with its code.
    Run(RunArgs),
    /// Create a container without starting it.
    Create(SpecArgs),
    /// Start containers.
    Start(NamesArgs),
    /// Stop containers: their stop signal, then SIGKILL after the timeout.
    Stop(StopArgs),
    /// Stop and start containers again.
    Restart(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Change containers' restart policy or checkpoint schedule.
    Update(UpdateArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// List containers.
    Ps(PsArgs),
    /// Print everything holdfastd knows about containers, as a JSON array.
    Inspect(NamesArgs),
    /// Print a container's output.
    Logs(LogsArgs),
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// Wait until containers exit and print their exit codes.
    Wait(NamesArgs),
    /// Print container lifecycle events as they happen.
    Events(EventsArgs),
    /// Checkpoint a container's task with CRIU; list and remove
    /// checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Re-create a container's task from one of its checkpoints and start
    /// it; the container must not be running.
    Restore(CheckpointArgs),
    /// Write a checkpoint, the container's rootfs changes and its config to
    /// one archive file (for `holdfast import` on another host).
    Export(ExportArgs),
    /// Create a container and its checkpoint from an archive `holdfast
    /// export` wrote; print the container's and the checkpoint's names.
    /// Start it with `holdfast restore NAME CHECKPOINT`.
    Import(ImportArgs),
    /// Move a running container to another holdfastd: checkpoint it, send
    /// it, restore it there, then remove it here.
    Migrate(MigrateArgs),
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The container.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The checkpoint.
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: String,
    /// The archive file to write (mode 0600; replaced only once the whole
    /// archive arrived).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: std::path::PathBuf,
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive file.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The new container's name (default: the archive's).
    #[arg(long)]
    pub name: Option<String>,
    /// For a container with a rootfs folder: the folder on this host
    /// (default: the archive's path, which must exist here).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<String>,
}

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The container (running).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The target holdfastd's socket, unix:///path.
    #[arg(long = "to", value_name = "ADDRESS")]
    pub to: String,
    /// The container's name on the target (default: the same).
    #[arg(long = "name", value_name = "NEW_NAME")]
    pub new_name: Option<String>,
    /// Keep the container here (stopped at the checkpoint) once it runs on
    /// the target.
    #[arg(long)]
    pub keep_source: bool,
}

/// `holdfast checkpoint ...`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Checkpoint a running container and print the checkpoint's name; the
    /// container stops after the dump unless --leave-running.
    Create(CheckpointCreateArgs),
    /// List a container's checkpoints, oldest first.
    #[command(alias = "list")]
    Ls(CheckpointLsArgs),
    /// Remove a checkpoint.
    #[command(alias = "remove")]
    Rm(CheckpointArgs),
}

/// Arguments of `checkpoint create`.
#[derive(Debug, Args)]
pub struct CheckpointCreateArgs {
    /// Leave the container running after the dump.
    #[arg(long)]
    pub leave_running: bool,
    /// Dump established TCP connections (CRIU --tcp-established).
    #[arg(long)]
    pub tcp_established: bool,
    /// Dump file locks (CRIU --file-locks).
    #[arg(long)]
    pub file_locks: bool,
    /// The container.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The checkpoint's name (default: made from the time,
    /// cp-YYYYMMDDTHHMMSS.mmmZ).
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: Option<String>,
}

/// Arguments of `checkpoint ls`.
#[derive(Debug, Args)]
pub struct CheckpointLsArgs {
    /// The container.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// A container and one of its checkpoints (`checkpoint rm`, `restore`).
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The container.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The checkpoint.
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: String,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start the container and print its name, without waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The container.
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// The container of `run` and `create`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The container's name (default: the image's or rootfs's last path
    /// part and a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// Restart policy: no, on-failure or on-failure:MAX, always or
    /// unless-stopped.
    #[arg(long, value_name = "POLICY", value_parser = parse::restart_policy)]
    pub restart: Option<RestartPolicy>,
    /// Remove the container once it exits.
    #[arg(long)]
    pub rm: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse::env_var)]
    pub env: Vec<String>,
    /// Bind mount a host folder or file (absolute paths).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]", value_parser = parse::mount)]
    pub volumes: Vec<Mount>,
    /// Set a label.
    #[arg(long = "label", value_name = "K=V", value_parser = parse::label)]
    pub labels: Vec<(String, String)>,
    /// Memory limit, e.g. 512m or 1g.
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse::size)]
    pub memory: Option<i64>,
    /// CPU limit, e.g. 1.5.
    #[arg(long, value_parser = parse::cpus)]
    pub cpus: Option<f64>,
    /// Most processes in the container.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub pids_limit: Option<i64>,
    /// Signal `stop` sends first (default SIGTERM).
    #[arg(long, value_name = "SIGNAL", value_parser = parse::signal)]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10; -1: forever).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = parse::stop_timeout)]
    pub stop_timeout: Option<i64>,
    /// Working directory in the container (absolute).
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep stdin open (for exec; attaching is not part of holdfast v1).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Use this root filesystem folder instead of an image.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<String>,
    /// Scheduled checkpoints.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// IMAGE (unless --rootfs) then the command and its arguments.
    #[arg(
        value_name = "IMAGE|CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `--checkpoint-every DURATION --checkpoint-keep N` (of `run`, `create`
/// and `update`). holdfastd checks the values (the CLI passes the duration
/// as written).
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Checkpoint the container every DURATION while it runs, leaving it
    /// running (e.g. 30s, 10m, 1h30m; at least 1s); needs
    /// --checkpoint-keep.
    #[arg(long, value_name = "DURATION", requires = "checkpoint_keep")]
    pub checkpoint_every: Option<String>,
    /// How many scheduled checkpoints to keep (at least 1): after each one
    /// the oldest scheduled ones are removed; checkpoints made by hand are
    /// never removed. Needs --checkpoint-every.
    #[arg(long, value_name = "N", requires = "checkpoint_every")]
    pub checkpoint_keep: Option<u32>,
}

impl ScheduleArgs {
    /// The schedule given, if any.
    pub fn schedule(&self) -> Option<CheckpointSchedule> {
        let every = self.checkpoint_every.clone()?;
        Some(CheckpointSchedule {
            every,
            keep: self.checkpoint_keep.unwrap_or(0),
        })
    }
}

/// Arguments of `update`: at least one change.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["restart", "checkpoint_every", "no_checkpoint_schedule"]))]
pub struct UpdateArgs {
    /// A new restart policy: no, on-failure or on-failure:MAX, always or
    /// unless-stopped.
    #[arg(long, value_name = "POLICY", value_parser = parse::restart_policy)]
    pub restart: Option<RestartPolicy>,
    /// A new checkpoint schedule.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Remove the checkpoint schedule (the checkpoints it made are kept).
    #[arg(long, conflicts_with = "checkpoint_every")]
    pub no_checkpoint_schedule: bool,
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Container names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `stop` and `restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL (default: the container's).
    #[arg(short = 't', long = "time", value_name = "SECONDS", allow_negative_numbers = true, value_parser = parse::stop_timeout)]
    pub time: Option<i64>,
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal (default SIGKILL).
    #[arg(short = 's', long, value_parser = parse::signal)]
    pub signal: Option<String>,
    /// Signal every process of the container, not only its init.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also stopped, created and quarantined containers.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print a JSON array (as `inspect`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of stdout and stderr together (`all`: every
    /// line).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse::tail)]
    pub tail: Option<u64>,
    /// Only output since T: an RFC 3339 time, Unix seconds or a duration
    /// before now (10m, 2h).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Prefix each line with its RFC 3339 time (nanoseconds).
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// The container.
    pub name: String,
}

/// Arguments of `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Forward this terminal's input.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse::env_var)]
    pub env: Vec<String>,
    /// Working directory in the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The container.
    pub name: String,
    /// The command and its arguments.
    #[arg(
        required = true,
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this container's events.
    #[arg(long)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("holdfast").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_an_image_and_a_command_with_its_own_flags() {
        let cli = parse(&[
            "run", "-d", "--name", "web", "-e", "A=1", "alpine", "ls", "-l",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.detach);
        assert_eq!(run.spec.name.as_deref(), Some("web"));
        assert_eq!(run.spec.env, ["A=1"]);
        assert_eq!(run.spec.args, ["alpine", "ls", "-l"]);
        assert_eq!(cli.host, DEFAULT_HOST);
    }

    #[test]
    fn run_with_rootfs_and_double_dash() {
        let cli = parse(&[
            "--host",
            "unix:///tmp/h.sock",
            "run",
            "--rootfs",
            "/r",
            "--stop-timeout",
            "-1",
            "--",
            "sh",
            "-c",
            "x",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.spec.rootfs.as_deref(), Some("/r"));
        assert_eq!(run.spec.stop_timeout, Some(-1));
        assert_eq!(run.spec.args, ["sh", "-c", "x"]);
        assert_eq!(cli.host, "unix:///tmp/h.sock");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = parse(&["run", "--restart", "sometimes", "alpine"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--restart"), "{err}");
        let err = parse(&["create", "-v", "rel:/b", "alpine"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--volume"), "{err}");
        let err = parse(&["create", "--memory", "lots", "alpine"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--memory"), "{err}");
    }

    #[test]
    fn a_checkpoint_schedule_needs_both_flags() {
        let cli = parse(&[
            "run",
            "--checkpoint-every",
            "10m",
            "--checkpoint-keep",
            "3",
            "alpine",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let schedule = run.spec.schedule.schedule().unwrap();
        assert_eq!((schedule.every.as_str(), schedule.keep), ("10m", 3));
        let err = parse(&["run", "--checkpoint-every", "10m", "alpine"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--checkpoint-keep"), "{err}");
        let err = parse(&["create", "--checkpoint-keep", "2", "alpine"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--checkpoint-every"), "{err}");
        // The duration is holdfastd's to check.
        assert!(parse(&[
            "run",
            "--checkpoint-every",
            "often",
            "--checkpoint-keep",
            "0",
            "alpine"
        ])
        .is_ok());
    }

    #[test]
    fn update_needs_a_change_and_a_name() {
        let cli = parse(&["update", "--restart", "always", "a", "b"]).unwrap();
        let Command::Update(up) = cli.command else {
            panic!("not update")
        };
        assert_eq!(up.names, ["a", "b"]);
        assert!(up.restart.is_some() && up.schedule.schedule().is_none());
        assert!(parse(&["update", "web"]).is_err(), "no change");
        assert!(parse(&["update", "--restart", "no"]).is_err(), "no name");
        assert!(parse(&["update", "--no-checkpoint-schedule", "web"]).is_ok());
        assert!(parse(&[
            "update",
            "--no-checkpoint-schedule",
            "--checkpoint-every",
            "1m",
            "--checkpoint-keep",
            "1",
            "web"
        ])
        .is_err());
    }

    #[test]
    fn exec_passes_the_command_flags_through() {
        let cli = parse(&["exec", "-it", "web", "sh", "-c", "echo hi"]).unwrap();
        let Command::Exec(exec) = cli.command else {
            panic!("not exec")
        };
        assert!(exec.interactive && exec.tty);
        assert_eq!(exec.command, ["sh", "-c", "echo hi"]);
    }
}
