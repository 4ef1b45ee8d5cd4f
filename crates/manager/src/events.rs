//! `Events`: container lifecycle events, fanned out to every subscriber.
//!
//! The [`Manager`] owns one [`EventHub`], a broadcast channel. Two kinds of
//! publishers feed it:
//! - [`spawn_containerd_events`] subscribes to containerd's task events of
//!   holdfastd's namespace (resubscribing when containerd goes away) and
//!   publishes `start`, `exit` (of init processes, with the exit code) and
//!   `oom` under the container's name (the containerd id);
//! - the manager's own operations publish what only holdfastd knows:
//!   `create`, `stop`, `kill`, `remove` (see [`crate::manager`]), and the
//!   lifecycle code `restart`, `quarantine`, `adopt`... with
//!   [`Manager::publish`] (or [`EventHub::publish`]).
//!
//! Each publisher's events are in order; an operation's event and a
//! containerd event it caused come from different sources, so e.g. `stop`
//! may arrive before the `exit` it caused. A subscriber that reads too
//! slowly to keep up with [`CAPACITY`] events gets one `dropped` event
//! saying how many it missed, then the next ones.

use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use holdfast_api::v1::Event;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::containerd::{Containerd, TaskEvent};
use crate::error::Result;
use crate::manager::Manager;
use crate::validate::validate_name;

/// Events kept for a subscriber that has not read them yet.
pub const CAPACITY: usize = 1024;
/// The action of the event a lagging subscriber gets.
pub const DROPPED: &str = "dropped";
/// Longest wait before subscribing to containerd again.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// An event of container `name` happening now.
pub fn event(name: &str, action: &str) -> Event {
    Event {
        time: Some(SystemTime::now().into()),
        name: name.to_owned(),
        action: action.to_owned(),
        exit_code: 0,
        message: String::new(),
    }
}

/// The broadcast channel of holdfastd's events.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// A hub keeping [`CAPACITY`] events per subscriber.
    pub fn new() -> EventHub {
        EventHub {
            tx: broadcast::Sender::new(CAPACITY),
        }
    }

    /// Sends `event` to every subscriber (none: it is dropped).
    pub fn publish(&self, event: Event) {
        debug!(container = %event.name, action = %event.action, "event");
        let _ = self.tx.send(event);
    }

    /// A new subscriber: it gets the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The event of a containerd task event, if it is one holdfastd reports:
/// a task's start, its init process's exit, an OOM. Task creation and
/// deletion are holdfastd's own `create`/`stop`/`remove`; exec exits are
/// not container events.
pub fn from_task_event(e: TaskEvent) -> Option<Event> {
    match e {
        TaskEvent::Start { id, .. } => Some(event(&id, "start")),
        TaskEvent::Exit {
            id,
            exec_id,
            exit_status,
            exited_at,
            ..
        } if exec_id == id || exec_id.is_empty() => Some(Event {
            time: Some(exited_at.unwrap_or_else(SystemTime::now).into()),
            exit_code: exit_status as i32,
            ..event(&id, "exit")
        }),
        TaskEvent::Oom { id } => Some(event(&id, "oom")),
        TaskEvent::Exit { .. } | TaskEvent::Create { .. } | TaskEvent::Delete { .. } => None,
    }
}

/// Publishes containerd's task events to `hub` for as long as the returned
/// task runs (abort it at shutdown); subscribes again, with back-off, when
/// containerd ends the subscription.
pub fn spawn_containerd_events(
    containerd: Containerd,
    hub: EventHub,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            let mut events = containerd.events();
            let mut received = false;
            while let Some(next) = events.next().await {
                match next {
                    Ok(e) => {
                        received = true;
                        delay = Duration::from_millis(100);
                        if let Some(event) = from_task_event(e) {
                            hub.publish(event);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "containerd's event subscription failed");
                        break;
                    }
                }
            }
            info!(received, ?delay, "subscribing to containerd's events again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
        }
    })
}

/// A subscriber's events, with lag reported as a [`DROPPED`] event.
fn events_of(
    rx: broadcast::Receiver<Event>,
    name: Option<String>,
) -> impl Stream<Item = Event> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((Some(e), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "an events subscriber reads too slowly");
                let dropped = Event {
                    message: format!("{n} events were dropped: this client reads too slowly"),
                    ..event("", DROPPED)
                };
                Some((Some(dropped), rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .filter_map(move |e| {
        let keep =
            e.filter(|e| e.action == DROPPED || name.as_deref().map_or(true, |n| n == e.name));
        async move { keep }
    })
}

impl Manager {
    /// Publishes a manager-level event (see the module docs).
    pub fn publish(&self, event: Event) {
        self.events.publish(event);
    }

    /// The event hub, e.g. to hand it to a task that publishes.
    pub fn event_hub(&self) -> &EventHub {
        &self.events
    }

    /// The events published from now on, of container `name` only when
    /// given (a name without a container is allowed: its events start when
    /// it is created). A bad name is refused.
    pub fn events(&self, name: Option<&str>) -> Result<impl Stream<Item = Event> + Send + 'static> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        let rx = self.events.subscribe();
        info!(container = name.unwrap_or(""), "events subscribed");
        Ok(events_of(rx, name.map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_filtered_and_lag_is_reported() {
        let hub = EventHub::new();
        let all = events_of(hub.subscribe(), None);
        let web = events_of(hub.subscribe(), Some("web".into()));
        hub.publish(event("web", "create"));
        hub.publish(event("db", "create"));
        hub.publish(event("web", "start"));
        drop(hub);
        let all: Vec<_> = all.map(|e| (e.name, e.action)).collect().await;
        assert_eq!(
            all,
            [
                ("web".to_owned(), "create".to_owned()),
                ("db".to_owned(), "create".to_owned()),
                ("web".to_owned(), "start".to_owned())
            ]
        );
        let web: Vec<_> = web.map(|e| e.action).collect().await;
        assert_eq!(web, ["create", "start"]);

        let hub = EventHub::new();
        let slow = events_of(hub.subscribe(), Some("web".into()));
        for i in 0..CAPACITY + 10 {
            hub.publish(event("web", &format!("a{i}")));
        }
        drop(hub);
        let got: Vec<_> = slow.collect().await;
        assert_eq!(got[0].action, DROPPED);
        assert!(
            got[0].message.starts_with("10 events were dropped"),
            "{:?}",
            got[0]
        );
        assert_eq!(got.len(), CAPACITY + 1);
        assert_eq!(got[1].action, "a10");
    }

    #[test]
    fn task_events_map_to_container_events() {
        let start = from_task_event(TaskEvent::Start {
            id: "web".into(),
            pid: 1,
        })
        .unwrap();
        assert_eq!(
            (start.name.as_str(), start.action.as_str()),
            ("web", "start")
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let exit = from_task_event(TaskEvent::Exit {
            id: "web".into(),
            exec_id: "web".into(),
            pid: 1,
            exit_status: 137,
            exited_at: Some(at),
        })
        .unwrap();
        assert_eq!((exit.action.as_str(), exit.exit_code), ("exit", 137));
        assert_eq!(exit.time.unwrap().seconds, 1_700_000_000);
        let exec_exit = TaskEvent::Exit {
            id: "web".into(),
            exec_id: "exec-1".into(),
            pid: 2,
            exit_status: 0,
            exited_at: None,
        };
        assert_eq!(from_task_event(exec_exit), None);
        assert_eq!(
            from_task_event(TaskEvent::Oom { id: "web".into() }).map(|e| e.action),
            Some("oom".to_owned())
        );
        assert_eq!(
            from_task_event(TaskEvent::Create {
                id: "web".into(),
                pid: 1,
            }),
            None
        );
    }
}
