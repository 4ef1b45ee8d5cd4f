//! Delivers task events to containerd, in order, and never gives up on one
//! because containerd is away.
//!
//! containerd's own publishers retry an event for about 15 seconds and then
//! drop it, so a task that exits while containerd is down for longer is never
//! reported by event. This publisher keeps a bounded queue and retries the
//! head of it, with back-off, until containerd's ttrpc socket answers again;
//! later events wait behind it so the order containerd sees is the order the
//! shim published in.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM,
    TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::r#async::transport::Socket;
use containerd_shim_protos::ttrpc::r#async::Client;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// Events kept while containerd is unreachable; beyond this the oldest are
/// dropped (and counted in the log), so a shim cannot grow without bound.
const MAX_QUEUED: usize = 16 * 1024;
/// Per-attempt timeout of one forward call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A task event the shim publishes.
#[derive(Debug, Clone)]
pub enum Event {
    /// `/tasks/create`
    Create(TaskCreate),
    /// `/tasks/start`
    Start(TaskStart),
    /// `/tasks/exit`
    Exit(TaskExit),
    /// `/tasks/delete`
    Delete(TaskDelete),
    /// `/tasks/exec-added`
    ExecAdded(TaskExecAdded),
    /// `/tasks/exec-started`
    ExecStarted(TaskExecStarted),
    /// `/tasks/paused`
    Paused(TaskPaused),
    /// `/tasks/resumed`
    Resumed(TaskResumed),
    /// `/tasks/oom`
    Oom(TaskOOM),
    /// `/tasks/checkpointed`
    Checkpointed(TaskCheckpointed),
}

impl Event {
    /// containerd's topic for the event.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Create(_) => topics::TASK_CREATE_EVENT_TOPIC,
            Event::Start(_) => topics::TASK_START_EVENT_TOPIC,
            Event::Exit(_) => topics::TASK_EXIT_EVENT_TOPIC,
            Event::Delete(_) => topics::TASK_DELETE_EVENT_TOPIC,
            Event::ExecAdded(_) => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Event::ExecStarted(_) => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Event::Paused(_) => topics::TASK_PAUSED_EVENT_TOPIC,
            Event::Resumed(_) => topics::TASK_RESUMED_EVENT_TOPIC,
            Event::Oom(_) => topics::TASK_OOM_EVENT_TOPIC,
            Event::Checkpointed(_) => topics::TASK_CHECKPOINTED_EVENT_TOPIC,
        }
    }

    /// The type name containerd's typeurl registry knows the event by.
    /// Spelled out rather than read from the protobuf descriptor: building
    /// the reflection pool costs every shim hundreds of KiB of heap.
    fn type_name(&self) -> &'static str {
        match self {
            Event::Create(_) => "containerd.events.TaskCreate",
            Event::Start(_) => "containerd.events.TaskStart",
            Event::Exit(_) => "containerd.events.TaskExit",
            Event::Delete(_) => "containerd.events.TaskDelete",
            Event::ExecAdded(_) => "containerd.events.TaskExecAdded",
            Event::ExecStarted(_) => "containerd.events.TaskExecStarted",
            Event::Paused(_) => "containerd.events.TaskPaused",
            Event::Resumed(_) => "containerd.events.TaskResumed",
            Event::Oom(_) => "containerd.events.TaskOOM",
            Event::Checkpointed(_) => "containerd.events.TaskCheckpointed",
        }
    }

    fn to_any(&self) -> Result<Any, containerd_shim_protos::protobuf::Error> {
        let value = match self {
            Event::Create(e) => e.write_to_bytes()?,
            Event::Start(e) => e.write_to_bytes()?,
            Event::Exit(e) => e.write_to_bytes()?,
            Event::Delete(e) => e.write_to_bytes()?,
            Event::ExecAdded(e) => e.write_to_bytes()?,
            Event::ExecStarted(e) => e.write_to_bytes()?,
            Event::Paused(e) => e.write_to_bytes()?,
            Event::Resumed(e) => e.write_to_bytes()?,
            Event::Oom(e) => e.write_to_bytes()?,
            Event::Checkpointed(e) => e.write_to_bytes()?,
        };
        Ok(Any {
            type_url: self.type_name().to_string(),
            value,
            ..Default::default()
        })
    }
}

/// Where the shim's lifecycle code sends events; tests replace it with a
/// channel.
pub trait EventSink: Send + Sync + 'static {
    /// Queues one event; never blocks and never fails.
    fn publish(&self, event: Event);
}

/// Converts a time to the protobuf timestamp containerd expects.
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
        ..Default::default()
    }
}

struct Queue {
    items: VecDeque<Envelope>,
    dropped: u64,
}

/// Publishes to containerd's ttrpc events service at `address`.
#[derive(Clone)]
pub struct RemotePublisher {
    namespace: String,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    idle: Arc<Notify>,
}

impl RemotePublisher {
    /// Starts the delivery task; `address` is containerd's ttrpc socket.
    pub fn start(address: &str, namespace: &str) -> Self {
        let publisher = RemotePublisher {
            namespace: namespace.to_string(),
            queue: Arc::new(Mutex::new(Queue {
                items: VecDeque::new(),
                dropped: 0,
            })),
            wake: Arc::new(Notify::new()),
            idle: Arc::new(Notify::new()),
        };
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        tokio::spawn(publisher.clone().deliver(path));
        publisher
    }

    /// Waits until every queued event is delivered, or `timeout` passes.
    /// Returns whether the queue is empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.lock().items.is_empty() {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn deliver(self, path: String) {
        let mut client: Option<EventsClient> = None;
        let mut backoff = Duration::from_millis(50);
        let mut outage_logged = false;
        loop {
            let head = {
                let q = self.lock();
                q.items.front().cloned()
            };
            let Some(envelope) = head else {
                self.idle.notify_waiters();
                let wake = self.wake.notified();
                if self.lock().items.is_empty() {
                    wake.await;
                }
                continue;
            };
            let c = match &client {
                Some(c) => c.clone(),
                None => match tokio::net::UnixStream::connect(&path).await {
                    Ok(stream) => {
                        let c = EventsClient::new(Client::new(Socket::from(stream)));
                        client = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        if !outage_logged {
                            tracing::warn!(address = %path, error = %e,
                                "containerd unreachable; events are queued until it returns");
                            outage_logged = true;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            let req = ForwardRequest {
                envelope: MessageField::some(envelope.clone()),
                ..Default::default()
            };
            let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
            match c.forward(ctx, &req).await {
                Ok(_) => {
                    self.pop_delivered(&envelope);
                    if outage_logged {
                        tracing::info!("containerd is back; delivering queued events");
                        outage_logged = false;
                    }
                    backoff = Duration::from_millis(50);
                }
                Err(ttrpc::Error::RpcStatus(status)) => {
                    // containerd answered and refused this event: retrying
                    // cannot help, and it must not hold back the rest.
                    tracing::warn!(topic = %envelope.topic, code = ?status.code(),
                        message = %status.message(), "containerd rejected event; dropping it");
                    self.pop_delivered(&envelope);
                }
                Err(e) => {
                    if !outage_logged {
                        tracing::warn!(topic = %envelope.topic, error = %e,
                            "event delivery failed; retrying until containerd answers");
                        outage_logged = true;
                    }
                    client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn pop_delivered(&self, delivered: &Envelope) {
        let mut q = self.lock();
        // The head may have been dropped for overflow meanwhile; only pop it
        // if it is still the one we delivered.
        if q.items.front() == Some(delivered) {
            q.items.pop_front();
        }
    }
}

impl EventSink for RemotePublisher {
    fn publish(&self, event: Event) {
        let any = match event.to_any() {
            Ok(any) => any,
            Err(e) => {
                tracing::error!(topic = event.topic(), error = %e, "cannot encode event");
                return;
            }
        };
        let envelope = Envelope {
            timestamp: MessageField::some(timestamp(OffsetDateTime::now_utc())),
            namespace: self.namespace.clone(),
            topic: event.topic().to_string(),
            event: MessageField::some(any),
            ..Default::default()
        };
        tracing::debug!(topic = event.topic(), "queue event");
        {
            let mut q = self.lock();
            if q.items.len() >= MAX_QUEUED {
                q.items.pop_front();
                q.dropped += 1;
                tracing::error!(
                    dropped = q.dropped,
                    "event queue full; dropped the oldest event"
                );
            }
            q.items.push_back(envelope);
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::shim::events::ForwardRequest;
    use containerd_shim_protos::shim_async::{create_events, Events};
    use containerd_shim_protos::ttrpc::r#async::{Server, TtrpcContext};
    use tokio::sync::mpsc;

    struct Collector(mpsc::UnboundedSender<String>);

    #[async_trait::async_trait]
    impl Events for Collector {
        async fn forward(
            &self,
            _ctx: &TtrpcContext,
            req: ForwardRequest,
        ) -> ttrpc::Result<containerd_shim_protos::api::Empty> {
            let _ = self.0.send(req.envelope.topic.clone());
            Ok(Default::default())
        }
    }

    fn exit_event(pid: u32) -> Event {
        Event::Exit(TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid,
            exit_status: 7,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn events_published_while_containerd_is_away_arrive_in_order_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("events.sock");
        let publisher = RemotePublisher::start(sock.to_str().unwrap(), "ns1");
        publisher.publish(Event::Start(TaskStart {
            container_id: "c1".into(),
            pid: 1,
            ..Default::default()
        }));
        publisher.publish(exit_event(1));
        // Nobody listens for a while: nothing may be dropped.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!publisher.flush(Duration::from_millis(1)).await);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let service = create_events(Arc::new(Collector(tx)));
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut server = Server::new()
            .add_listener(listener.try_into().unwrap())
            .register_service(service);
        server.start().await.unwrap();

        assert!(publisher.flush(Duration::from_secs(10)).await);
        assert_eq!(rx.recv().await.unwrap(), topics::TASK_START_EVENT_TOPIC);
        assert_eq!(rx.recv().await.unwrap(), topics::TASK_EXIT_EVENT_TOPIC);
        server.shutdown().await.unwrap();
    }

    #[test]
    fn type_names_match_the_protobuf_descriptors() {
        use containerd_shim_protos::protobuf::MessageFull;
        let all = [
            (Event::Create(Default::default()), TaskCreate::descriptor()),
            (Event::Start(Default::default()), TaskStart::descriptor()),
            (exit_event(3), TaskExit::descriptor()),
            (Event::Delete(Default::default()), TaskDelete::descriptor()),
            (
                Event::ExecAdded(Default::default()),
                TaskExecAdded::descriptor(),
            ),
            (
                Event::ExecStarted(Default::default()),
                TaskExecStarted::descriptor(),
            ),
            (Event::Paused(Default::default()), TaskPaused::descriptor()),
            (
                Event::Resumed(Default::default()),
                TaskResumed::descriptor(),
            ),
            (Event::Oom(Default::default()), TaskOOM::descriptor()),
            (
                Event::Checkpointed(Default::default()),
                TaskCheckpointed::descriptor(),
            ),
        ];
        for (event, descriptor) in all {
            assert_eq!(event.to_any().unwrap().type_url, descriptor.full_name());
        }
    }
}
