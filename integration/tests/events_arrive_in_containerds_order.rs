//! Issue #2, events: Create, Start, Exit, Delete for a task; ExecAdded,
//! ExecStarted, Exit for an exec; an OOM event when the memory limit bites.

use std::time::Duration;

use anyhow::ensure;
use holdfast_integration::{each_version, Event};

const WAIT: Duration = Duration::from_secs(20);

fn task_topics(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.topic.starts_with("/tasks/"))
        .map(|e| e.topic.as_str())
        .collect()
}

#[test]
fn a_task_publishes_create_start_exit_delete_in_order() {
    each_version(|cd| {
        let events = cd.events()?;
        let id = cd.id();
        let out = cd.run(&["--rm"], &id, &["/bin/sh", "-c", "exit 2"])?;
        ensure!(out.code == Some(2), "{out}");
        events.wait_for("/tasks/delete", WAIT, |e| {
            e.topic == "/tasks/delete" && e.is_for(&id)
        })?;
        let mine: Vec<Event> = events.all().into_iter().filter(|e| e.is_for(&id)).collect();
        let topics = task_topics(&mine);
        ensure!(
            topics
                == [
                    "/tasks/create",
                    "/tasks/start",
                    "/tasks/exit",
                    "/tasks/delete"
                ],
            "topics for {id}: {topics:?}\n{}",
            events.dump()
        );
        let exit = mine.iter().find(|e| e.topic == "/tasks/exit");
        ensure!(
            exit.and_then(Event::exit_status) == Some(2),
            "exit event: {exit:?}"
        );
        cd.assert_clean()
    });
}

#[test]
fn an_exec_publishes_added_started_exit_in_order() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let events = cd.events()?;
        let e = cd.exec_id();
        let out = cd.exec(&[], &id, &e, &["/bin/sh", "-c", "exit 3"])?;
        ensure!(out.code == Some(3), "{out}");
        let is_exec = |ev: &Event| {
            ev.field("exec_id") == Some(e.as_str()) || ev.field("id") == Some(e.as_str())
        };
        events.wait_for("exec exit", WAIT, |ev| {
            ev.topic == "/tasks/exit" && is_exec(ev)
        })?;
        let mine: Vec<Event> = events.all().into_iter().filter(|ev| is_exec(ev)).collect();
        let topics = task_topics(&mine);
        ensure!(
            topics == ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
            "topics for exec {e}: {topics:?}\n{}",
            events.dump()
        );
        let exit = mine.iter().find(|ev| ev.topic == "/tasks/exit");
        ensure!(
            exit.and_then(Event::exit_status) == Some(3) && exit.is_some_and(|ev| ev.is_for(&id)),
            "exec exit event: {exit:?}"
        );
        // No task exit or delete for the container itself.
        ensure!(
            !events.all().iter().any(|ev| ev.is_for(&id)
                && ev.field("id") == Some(id.as_str())
                && ev.topic == "/tasks/exit"),
            "the exec's exit was reported as the task's:\n{}",
            events.dump()
        );
        cd.assert_clean()
    });
}

#[test]
fn pause_and_resume_publish_their_events() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let events = cd.events()?;
        cd.ctr(&["t", "pause", &id])?.ok()?;
        events.wait_for("/tasks/paused", WAIT, |e| {
            e.topic == "/tasks/paused" && e.is_for(&id)
        })?;
        cd.ctr(&["t", "resume", &id])?.ok()?;
        events.wait_for("/tasks/resumed", WAIT, |e| {
            e.topic == "/tasks/resumed" && e.is_for(&id)
        })?;
        cd.assert_clean()
    });
}

#[test]
fn running_out_of_memory_publishes_an_oom_event() {
    each_version(|cd| {
        let events = cd.events()?;
        let id = cd.id();
        // 32 MiB limit; dd's 128 MiB buffer is touched as it reads. The shell
        // survives the OOM kill of dd, so the task stays RUNNING.
        cd.run_detached_with(
            &["--memory-limit", "33554432"],
            &id,
            &[
                "/bin/sh",
                "-c",
                "dd if=/dev/zero of=/dev/null bs=128M count=1; sleep 1000",
            ],
        )?;
        events.wait_for("/tasks/oom", WAIT, |e| {
            e.topic == "/tasks/oom" && e.is_for(&id)
        })?;
        cd.assert_clean()
    });
}
