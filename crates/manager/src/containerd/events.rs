//! Task events of our namespace, from containerd's events service.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use containerd_client::events::{TaskCreate, TaskDelete, TaskExit, TaskOom, TaskStart};
use containerd_client::services::v1::SubscribeRequest;
use futures::Stream;
use prost::Message;

use super::{to_system_time, Containerd, Error, Result};

/// A task event holdfastd acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// A task was created.
    Create {
        /// Container id.
        id: String,
        /// Init pid.
        pid: u32,
    },
    /// A task's init process started.
    Start {
        /// Container id.
        id: String,
        /// Init pid.
        pid: u32,
    },
    /// A process exited (`exec_id` equal to `id` for the init process).
    Exit {
        /// Container id.
        id: String,
        /// Process id: the container id for init, else the exec id.
        exec_id: String,
        /// Pid.
        pid: u32,
        /// Exit status.
        exit_status: u32,
        /// When.
        exited_at: Option<SystemTime>,
    },
    /// The task hit its memory limit.
    Oom {
        /// Container id.
        id: String,
    },
    /// A task was deleted.
    Delete {
        /// Container id.
        id: String,
        /// Exit status.
        exit_status: u32,
    },
}

/// The topics [`Containerd::events`] subscribes to.
pub const TOPICS: &[&str] = &[
    "/tasks/create",
    "/tasks/start",
    "/tasks/exit",
    "/tasks/oom",
    "/tasks/delete",
];

/// The decoded event of an envelope's topic and payload; `None` for
/// topics and types not handled here.
pub fn decode(topic: &str, any: &prost_types::Any) -> Option<TaskEvent> {
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let v = any.value.as_slice();
    match (topic, name) {
        ("/tasks/create", "containerd.events.TaskCreate") => {
            TaskCreate::decode(v).ok().map(|e| TaskEvent::Create {
                id: e.container_id,
                pid: e.pid,
            })
        }
        ("/tasks/start", "containerd.events.TaskStart") => {
            TaskStart::decode(v).ok().map(|e| TaskEvent::Start {
                id: e.container_id,
                pid: e.pid,
            })
        }
        ("/tasks/exit", "containerd.events.TaskExit") => {
            TaskExit::decode(v).ok().map(|e| TaskEvent::Exit {
                id: e.container_id,
                exec_id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
                exited_at: to_system_time(e.exited_at),
            })
        }
        ("/tasks/oom", "containerd.events.TaskOOM") => TaskOom::decode(v)
            .ok()
            .map(|e| TaskEvent::Oom { id: e.container_id }),
        ("/tasks/delete", "containerd.events.TaskDelete") => {
            TaskDelete::decode(v).ok().map(|e| TaskEvent::Delete {
                id: e.container_id,
                exit_status: e.exit_status,
            })
        }
        _ => None,
    }
}

/// A stream of [`TaskEvent`]s; ends when containerd closes it (e.g. when
/// it stops) or after an error: subscribe again after reconnecting.
pub struct TaskEvents {
    rx: tokio::sync::mpsc::Receiver<Result<TaskEvent>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TaskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskEvents")
    }
}

impl Drop for TaskEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for TaskEvents {
    type Item = Result<TaskEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn pump(
    mut client: containerd_client::services::v1::events_client::EventsClient<
        tonic::transport::Channel,
    >,
    request: tonic::Request<SubscribeRequest>,
    tx: tokio::sync::mpsc::Sender<Result<TaskEvent>>,
) {
    let mut stream = match client.subscribe(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = tx
                .send(Err(Error::from_status("events.subscribe", "", s)))
                .await;
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(env)) => {
                let Some(ev) = env.event.as_ref().and_then(|a| decode(&env.topic, a)) else {
                    tracing::debug!(topic = %env.topic, "event skipped");
                    continue;
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(s) => {
                let _ = tx
                    .send(Err(Error::from_status("events.subscribe", "", s)))
                    .await;
                return;
            }
        }
    }
}

impl Containerd {
    /// Subscribes to the task events ([`TOPICS`]) of our namespace (filter
    /// values are quoted: containerd's filter parser rejects a bare `/`).
    ///
    /// containerd answers a subscription only with its first event, so the
    /// subscription runs in a background task (aborted when the stream is
    /// dropped) and this returns at once: events published right after it
    /// returns may be missed. Reconcile with
    /// [`list_tasks`](Containerd::list_tasks) after subscribing. Must be
    /// called inside a tokio runtime.
    pub fn events(&self) -> TaskEvents {
        let filters = TOPICS
            .iter()
            .map(|t| format!("namespace==\"{}\",topic==\"{t}\"", self.namespace))
            .collect();
        let client =
            containerd_client::services::v1::events_client::EventsClient::new(self.channel.clone());
        let request = self.req(SubscribeRequest { filters });
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let task = tokio::spawn(pump(client, request, tx));
        TaskEvents { rx, task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_envelope_decodes_and_other_topics_are_skipped() {
        let exit = TaskExit {
            container_id: "web".into(),
            id: "web".into(),
            pid: 42,
            exit_status: 137,
            exited_at: None,
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.encode_to_vec(),
        };
        assert_eq!(
            decode("/tasks/exit", &any),
            Some(TaskEvent::Exit {
                id: "web".into(),
                exec_id: "web".into(),
                pid: 42,
                exit_status: 137,
                exited_at: None
            })
        );
        assert_eq!(decode("/tasks/paused", &any), None);
    }
}
