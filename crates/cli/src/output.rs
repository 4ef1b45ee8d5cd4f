//! Formatting of what holdfastd returns: the `ps` table, `inspect` JSON,
//! log line prefixes and event lines. Pure functions of the data and "now".

use holdfast_api::v1::{
    Checkpoint, CheckpointScheduleState, Container, ContainerSpec, ContainerState, ContainerStatus,
    Event, LogStream, Mount, RestartPolicyKind,
};
use prost_types::Timestamp;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest COMMAND shown by `ps` before it is cut with `…`.
const COMMAND_WIDTH: usize = 40;

/// A protobuf timestamp as a time, if it is set and in range.
pub fn to_time(ts: Option<&Timestamp>) -> Option<OffsetDateTime> {
    let ts = ts?;
    if ts.seconds == 0 && ts.nanos == 0 {
        return None;
    }
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A time as a protobuf timestamp.
pub fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

/// RFC 3339 with as many fraction digits as needed (Go's RFC3339Nano).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A past duration as docker words it: `5 seconds`, `About a minute`,
/// `3 hours`...
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => format!("{mins} minutes"),
        s if s < 7200 => "About an hour".to_owned(),
        s if s < 48 * 3600 => format!("{hours} hours"),
        _ if days < 14 => format!("{days} days"),
        _ if days < 60 => format!("{} weeks", days / 7),
        _ if days < 730 => format!("{} months", days / 30),
        _ => format!("{} years", days / 365),
    }
}

/// `human_duration(now - t) + " ago"`, or empty when `t` is unset.
pub fn ago(t: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match t {
        Some(t) => format!("{} ago", human_duration((now - t).whole_seconds())),
        None => String::new(),
    }
}

/// The lower-case name of a status.
pub fn status_name(status: i32) -> &'static str {
    match ContainerStatus::try_from(status) {
        Ok(ContainerStatus::Created) => "created",
        Ok(ContainerStatus::Running) => "running",
        Ok(ContainerStatus::Paused) => "paused",
        Ok(ContainerStatus::Exited) => "exited",
        Ok(ContainerStatus::Restarting) => "restarting",
        Ok(ContainerStatus::Quarantined) => "quarantined",
        Ok(ContainerStatus::Unspecified) | Err(_) => "unknown",
    }
}

/// The STATUS column: `running (pid 123)`, `exited (7) 5 minutes ago`,
/// `quarantined: reason`...
pub fn status_text(state: Option<&ContainerState>, now: OffsetDateTime) -> String {
    let Some(state) = state else {
        return "unknown".to_owned();
    };
    let name = status_name(state.status);
    match ContainerStatus::try_from(state.status) {
        Ok(ContainerStatus::Running) | Ok(ContainerStatus::Paused) if state.pid != 0 => {
            format!("{name} (pid {})", state.pid)
        }
        Ok(ContainerStatus::Exited) => {
            let when = ago(to_time(state.finished_at.as_ref()), now);
            format!("{name} ({}) {when}", state.exit_code)
                .trim_end()
                .to_owned()
        }
        Ok(ContainerStatus::Quarantined) if !state.error.is_empty() => {
            format!("{name}: {}", state.error)
        }
        _ => name.to_owned(),
    }
}

/// A command line as one string, quoting arguments that need it.
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The `ps` table, header included, columns separated by at least three
/// spaces.
pub fn ps_table(containers: &[Container], now: OffsetDateTime) -> String {
    let mut rows = vec![[
        "NAME",
        "STATUS",
        "IMAGE/ROOTFS",
        "COMMAND",
        "CREATED",
        "RESTARTS",
    ]
    .map(str::to_owned)];
    for c in containers {
        let default_spec = ContainerSpec::default();
        let spec = c.spec.as_ref().unwrap_or(&default_spec);
        let source = if spec.image.is_empty() {
            &spec.rootfs
        } else {
            &spec.image
        };
        let command = truncate(&command_line(&spec.command), COMMAND_WIDTH);
        rows.push([
            spec.name.clone(),
            status_text(c.state.as_ref(), now),
            source.clone(),
            if command.is_empty() {
                String::new()
            } else {
                format!("\"{command}\"")
            },
            ago(to_time(c.created_at.as_ref()), now),
            c.state.as_ref().map_or(0, |s| s.restart_count).to_string(),
        ]);
    }
    table(&rows)
}

/// Rows as a table, columns separated by at least three spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as a human size: `512B`, `1.5KiB`, `12.0MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// The `checkpoint ls` table, header included.
pub fn checkpoints_table(checkpoints: &[Checkpoint], now: OffsetDateTime) -> String {
    let mut rows =
        vec![["NAME", "CREATED", "SIZE", "SCHEDULED", "LEAVE-RUNNING"].map(str::to_owned)];
    for cp in checkpoints {
        rows.push([
            cp.name.clone(),
            ago(to_time(cp.created_at.as_ref()), now),
            human_size(cp.size_bytes),
            cp.scheduled.to_string(),
            cp.leave_running.to_string(),
        ]);
    }
    table(&rows)
}

fn time_json(ts: Option<&Timestamp>) -> Value {
    to_time(ts).map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn restart_json(spec: &ContainerSpec) -> Value {
    let policy = spec.restart.unwrap_or_default();
    let name = match RestartPolicyKind::try_from(policy.kind) {
        Ok(RestartPolicyKind::OnFailure) => "on-failure",
        Ok(RestartPolicyKind::Always) => "always",
        Ok(RestartPolicyKind::UnlessStopped) => "unless-stopped",
        _ => "no",
    };
    json!({ "name": name, "max_retries": policy.max_retries })
}

fn schedule_json(spec: &ContainerSpec) -> Value {
    spec.checkpoint_schedule
        .as_ref()
        .map_or(Value::Null, |s| json!({ "every": s.every, "keep": s.keep }))
}

fn schedule_state_json(state: Option<&CheckpointScheduleState>) -> Value {
    state.map_or(Value::Null, |s| {
        json!({
            "last_tick_at": time_json(s.last_tick_at.as_ref()),
            "last_checkpoint": s.last_checkpoint,
            "last_checkpoint_at": time_json(s.last_checkpoint_at.as_ref()),
            "last_error": s.last_error,
            "failures": s.failures,
            "next_tick_at": time_json(s.next_tick_at.as_ref()),
        })
    })
}

fn mount_json(m: &Mount) -> Value {
    json!({ "source": m.source, "destination": m.destination, "read_only": m.read_only })
}

/// One container as a JSON object (what `inspect` and `ps --json` print).
pub fn container_json(c: &Container) -> Value {
    let spec = c.spec.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let resources = spec.resources.unwrap_or_default();
    let mut labels: Vec<_> = spec.labels.iter().collect();
    labels.sort();
    let labels: serde_json::Map<String, Value> = labels
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "name": spec.name,
        "created_at": time_json(c.created_at.as_ref()),
        "log_dir": c.log_dir,
        "spec": {
            "image": spec.image,
            "rootfs": spec.rootfs,
            "command": spec.command,
            "env": spec.env,
            "working_dir": spec.working_dir,
            "mounts": spec.mounts.iter().map(mount_json).collect::<Vec<_>>(),
            "labels": labels,
            "resources": {
                "memory_bytes": resources.memory_bytes,
                "cpus": resources.cpus,
                "pids_limit": resources.pids_limit,
            },
            "restart": restart_json(&spec),
            "auto_remove": spec.auto_remove,
            "stop_signal": spec.stop_signal,
            "stop_timeout_seconds": spec.stop_timeout_seconds,
            "tty": spec.tty,
            "stdin_open": spec.stdin_open,
            "checkpoint_schedule": schedule_json(&spec),
        },
        "state": {
            "status": status_name(state.status),
            "pid": state.pid,
            "exit_code": state.exit_code,
            "started_at": time_json(state.started_at.as_ref()),
            "finished_at": time_json(state.finished_at.as_ref()),
            "restart_count": state.restart_count,
            "stopped_by_user": state.stopped_by_user,
            "error": state.error,
            "checkpoint_schedule": schedule_state_json(state.checkpoint_schedule.as_ref()),
        },
    })
}

/// Containers as a pretty JSON array, with a final newline.
pub fn containers_json(containers: &[Container]) -> String {
    let array = Value::Array(containers.iter().map(container_json).collect());
    let mut s = serde_json::to_string_pretty(&array).unwrap_or_else(|_| "[]".to_owned());
    s.push('\n');
    s
}

/// Checkpoints as a pretty JSON array (`checkpoint ls --json`).
pub fn checkpoints_json(checkpoints: &[Checkpoint]) -> String {
    let array = Value::Array(
        checkpoints
            .iter()
            .map(|cp| {
                json!({
                    "container": cp.container,
                    "name": cp.name,
                    "created": time_json(cp.created_at.as_ref()),
                    "size_bytes": cp.size_bytes,
                    "leave_running": cp.leave_running,
                    "tcp_established": cp.tcp_established,
                    "file_locks": cp.file_locks,
                    "path": cp.path,
                    "scheduled": cp.scheduled,
                })
            })
            .collect(),
    );
    let mut s = serde_json::to_string_pretty(&array).unwrap_or_else(|_| "[]".to_owned());
    s.push('\n');
    s
}

/// One line of `events`: `TIME NAME ACTION[ (exit code N)][: MESSAGE]`.
pub fn event_line(e: &Event) -> String {
    let time = to_time(e.time.as_ref()).map_or_else(|| "-".to_owned(), rfc3339);
    let mut line = format!("{time} {} {}", e.name, e.action);
    if e.action == "exit" {
        line.push_str(&format!(" (exit code {})", e.exit_code));
    }
    if !e.message.is_empty() {
        line.push_str(": ");
        line.push_str(&e.message);
    }
    line
}

/// Puts a `TIME ` prefix before each line of log output when asked, for
/// `logs --timestamps`. Records may carry part of a line: the prefix goes
/// only where a line starts, tracked per stream.
#[derive(Debug, Default)]
pub struct LinePrefixer {
    mid_line: [bool; 2],
}

impl LinePrefixer {
    /// Forgets a line left open in `stream` (after a gap, the next output
    /// starts a line).
    pub fn end_line(&mut self, stream: i32) {
        self.mid_line[usize::from(stream == LogStream::Stderr as i32)] = false;
    }

    /// The bytes to print for one record of `stream` read at `time`.
    pub fn prefix(&mut self, stream: i32, time: Option<&Timestamp>, data: &[u8]) -> Vec<u8> {
        let index = usize::from(stream == LogStream::Stderr as i32);
        let stamp = format!("{} ", to_time(time).map_or_else(|| "-".to_owned(), rfc3339));
        let mut out = Vec::with_capacity(data.len() + stamp.len());
        for line in data.split_inclusive(|b| *b == b'\n') {
            if !self.mid_line[index] {
                out.extend_from_slice(stamp.as_bytes());
            }
            out.extend_from_slice(line);
            self.mid_line[index] = line.last() != Some(&b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::v1::{Resources, RestartPolicy};

    #[test]
    fn checkpoints_list_with_their_age_size_and_mode() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).expect("time");
        let cps = [
            Checkpoint {
                name: "cp1".into(),
                created_at: at(1_000_000 - 90),
                size_bytes: 3 * 1024 * 1024 + 512 * 1024,
                leave_running: true,
                ..Default::default()
            },
            Checkpoint {
                name: "second".into(),
                created_at: at(1_000_000 - 5),
                size_bytes: 100,
                ..Default::default()
            },
        ];
        let table = checkpoints_table(&cps, now);
        let lines: Vec<&str> = table.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "CREATED", "SIZE", "SCHEDULED", "LEAVE-RUNNING"]
        );
        assert!(
            lines[1].starts_with("cp1      About a minute ago"),
            "{table}"
        );
        assert!(
            lines[1].contains("3.5MiB") && lines[1].ends_with("true"),
            "{table}"
        );
        assert!(
            lines[2].contains("100B") && lines[2].ends_with("false"),
            "{table}"
        );
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(1536), "1.5KiB");
    }

    fn at(secs: i64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: secs,
            nanos: 0,
        })
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    fn container(name: &str, state: ContainerState) -> Container {
        Container {
            spec: Some(ContainerSpec {
                name: name.to_owned(),
                image: "docker.io/library/alpine:3".to_owned(),
                command: vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    "echo hi; sleep 1".to_owned(),
                ],
                env: vec!["A=1".to_owned()],
                labels: [
                    ("b".to_owned(), "2".to_owned()),
                    ("a".to_owned(), "1".to_owned()),
                ]
                .into(),
                mounts: vec![Mount {
                    source: "/d".to_owned(),
                    destination: "/data".to_owned(),
                    read_only: true,
                }],
                resources: Some(Resources {
                    memory_bytes: 1 << 20,
                    cpus: 1.5,
                    pids_limit: 10,
                }),
                restart: Some(RestartPolicy {
                    kind: RestartPolicyKind::OnFailure as i32,
                    max_retries: 3,
                }),
                ..Default::default()
            }),
            state: Some(state),
            created_at: at(1_700_000_000 - 3 * 3600),
            log_dir: "/var/lib/holdfast/logs/x".to_owned(),
        }
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(4000), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(21 * 86400), "3 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
        assert_eq!(human_duration(-5), "Less than a second");
    }

    #[test]
    fn statuses_say_what_matters() {
        let running = ContainerState {
            status: ContainerStatus::Running as i32,
            pid: 123,
            ..Default::default()
        };
        assert_eq!(status_text(Some(&running), now()), "running (pid 123)");
        let exited = ContainerState {
            status: ContainerStatus::Exited as i32,
            exit_code: 7,
            finished_at: at(1_700_000_000 - 300),
            ..Default::default()
        };
        assert_eq!(
            status_text(Some(&exited), now()),
            "exited (7) 5 minutes ago"
        );
        let quarantined = ContainerState {
            status: ContainerStatus::Quarantined as i32,
            error: "bad record".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            status_text(Some(&quarantined), now()),
            "quarantined: bad record"
        );
        let created = ContainerState {
            status: ContainerStatus::Created as i32,
            ..Default::default()
        };
        assert_eq!(status_text(Some(&created), now()), "created");
        assert_eq!(status_text(None, now()), "unknown");
    }

    #[test]
    fn command_lines_quote_what_needs_it() {
        let args = ["sh", "-c", "echo it's", ""].map(str::to_owned);
        assert_eq!(command_line(&args), r"sh -c 'echo it'\''s' ''");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn ps_table_aligns_its_columns() {
        let running = ContainerState {
            status: ContainerStatus::Running as i32,
            pid: 42,
            restart_count: 2,
            ..Default::default()
        };
        let table = ps_table(&[container("web", running)], now());
        let expected = "\
NAME   STATUS             IMAGE/ROOTFS                 COMMAND                      CREATED       RESTARTS
web    running (pid 42)   docker.io/library/alpine:3   \"sh -c 'echo hi; sleep 1'\"   3 hours ago   2
";
        assert_eq!(table, expected);
    }

    #[test]
    fn container_json_has_spec_and_state() {
        let exited = ContainerState {
            status: ContainerStatus::Exited as i32,
            exit_code: 1,
            finished_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000,
            }),
            ..Default::default()
        };
        let v = container_json(&container("db", exited));
        assert_eq!(v["name"], "db");
        assert_eq!(v["created_at"], "2023-11-14T19:13:20Z");
        assert_eq!(v["state"]["status"], "exited");
        assert_eq!(v["state"]["finished_at"], "2023-11-14T22:13:20.5Z");
        assert_eq!(v["state"]["started_at"], Value::Null);
        assert_eq!(
            v["spec"]["restart"],
            json!({ "name": "on-failure", "max_retries": 3 })
        );
        assert_eq!(v["spec"]["mounts"][0]["read_only"], true);
        assert_eq!(v["spec"]["resources"]["cpus"], 1.5);
        assert_eq!(
            serde_json::to_string(&v["spec"]["labels"]).unwrap(),
            r#"{"a":"1","b":"2"}"#
        );
        assert!(containers_json(&[]).starts_with("[]"));
        assert_eq!(v["spec"]["checkpoint_schedule"], Value::Null);
        assert_eq!(v["state"]["checkpoint_schedule"], Value::Null);

        let mut c = container("db", ContainerState::default());
        if let Some(spec) = c.spec.as_mut() {
            spec.checkpoint_schedule = Some(holdfast_api::v1::CheckpointSchedule {
                every: "10m".into(),
                keep: 3,
            });
        }
        if let Some(state) = c.state.as_mut() {
            state.checkpoint_schedule = Some(CheckpointScheduleState {
                last_checkpoint: "cp-1".into(),
                last_checkpoint_at: at(1_700_000_000),
                failures: 2,
                last_error: "criu failed".into(),
                ..Default::default()
            });
        }
        let v = container_json(&c);
        assert_eq!(
            v["spec"]["checkpoint_schedule"],
            json!({ "every": "10m", "keep": 3 })
        );
        let s = &v["state"]["checkpoint_schedule"];
        assert_eq!(s["last_checkpoint"], "cp-1");
        assert_eq!(s["last_checkpoint_at"], "2023-11-14T22:13:20Z");
        assert_eq!(s["failures"], 2);
        assert_eq!(s["last_error"], "criu failed");
        assert_eq!(s["next_tick_at"], Value::Null);
    }

    #[test]
    fn event_lines_carry_exit_codes_and_messages() {
        let e = Event {
            time: at(1_700_000_000),
            name: "web".to_owned(),
            action: "exit".to_owned(),
            exit_code: 3,
            message: String::new(),
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20Z web exit (exit code 3)"
        );
        let e = Event {
            action: "restart".to_owned(),
            message: "no such file".to_owned(),
            ..e
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20Z web restart: no such file"
        );
    }

    #[test]
    fn timestamps_prefix_line_starts_only() {
        let mut p = LinePrefixer::default();
        let t = Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        });
        let out = LogStream::Stdout as i32;
        let err = LogStream::Stderr as i32;
        assert_eq!(
            p.prefix(out, t.as_ref(), b"a\nb"),
            b"2023-11-14T22:13:20.123456789Z a\n2023-11-14T22:13:20.123456789Z b"
        );
        assert_eq!(
            p.prefix(err, t.as_ref(), b"e\n"),
            b"2023-11-14T22:13:20.123456789Z e\n"
        );
        assert_eq!(p.prefix(out, t.as_ref(), b"c\n"), b"c\n");
    }
}
