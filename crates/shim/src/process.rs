//! One process of a container (its init or an exec) and its lifecycle state.

use std::sync::Mutex;

use containerd_shim_protos::api::Status as TaskStatus;
use oci_spec::runtime::Process as ProcessSpec;
use tokio::sync::watch;

use crate::io::ProcessIo;
use crate::reaper::Exit;

/// Where a process is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created by runc (or recorded by Exec), not started.
    Created,
    /// Started and not yet exited.
    Running,
    /// Frozen by Pause (the init process only).
    Paused,
    /// Exited and reaped.
    Stopped,
}

impl Status {
    /// containerd's status enum.
    pub fn to_proto(self) -> TaskStatus {
        match self {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Paused => TaskStatus::PAUSED,
            Status::Stopped => TaskStatus::STOPPED,
        }
    }
}

#[derive(Debug)]
struct State {
    pid: u32,
    status: Status,
}

/// A container process.
#[derive(Debug)]
pub struct Process {
    /// The container it belongs to.
    pub container_id: String,
    /// Empty for the init process.
    pub exec_id: String,
    /// Its stdio.
    pub io: ProcessIo,
    /// The OCI process spec (exec processes).
    pub spec: Option<ProcessSpec>,
    state: Mutex<State>,
    exit: watch::Sender<Option<Exit>>,
    /// Held while Start runs, so that an exit is published after the start
    /// event even when the process exits at once.
    pub start_lock: tokio::sync::Mutex<()>,
}

impl Process {
    /// A process that has not been created by runc yet.
    pub fn new(
        container_id: &str,
        exec_id: &str,
        io: ProcessIo,
        spec: Option<ProcessSpec>,
    ) -> Self {
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            io,
            spec,
            state: Mutex::new(State {
                pid: 0,
                status: Status::Created,
            }),
            exit: watch::channel(None).0,
            start_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id containerd uses for this process in events: the exec id, or
    /// the container id for init.
    pub fn event_id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }

    /// Its host pid (0 before it exists).
    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// Records the host pid.
    pub fn set_pid(&self, pid: u32) {
        self.lock().pid = pid;
    }

    /// Its status.
    pub fn status(&self) -> Status {
        self.lock().status
    }

    /// Moves to `status` unless the process has already stopped; returns the
    /// status it had.
    pub fn set_status(&self, status: Status) -> Status {
        let mut s = self.lock();
        let before = s.status;
        if before != Status::Stopped {
            s.status = status;
        }
        before
    }

    /// Its exit, once it has exited.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Records the exit and wakes every Wait.
    pub fn set_exited(&self, exit: Exit) {
        self.lock().status = Status::Stopped;
        self.exit.send_replace(Some(exit));
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }
}
