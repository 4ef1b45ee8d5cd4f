//! A `ctr events` subscriber that collects what containerd publishes.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One line of `ctr events`:
/// `<date> <time> <zone> <zone> <namespace> <topic> <json>`.
#[derive(Debug, Clone)]
pub struct Event {
    /// The namespace the event belongs to.
    pub namespace: String,
    /// e.g. `/tasks/exit`.
    pub topic: String,
    /// The event body (`{"container_id":...}`), `Null` when not JSON.
    pub body: Value,
    /// The whole line, for messages.
    pub raw: String,
}

impl Event {
    /// Parses a `ctr events` line; `None` for lines of another shape.
    pub fn parse(line: &str) -> Option<Event> {
        let tokens: Vec<&str> = line.split(' ').collect();
        let at = tokens.iter().position(|t| t.starts_with('/'))?;
        let namespace = tokens.get(at.checked_sub(1)?)?.to_string();
        let topic = tokens[at].to_string();
        let rest = tokens[at + 1..].join(" ");
        let body = serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
        Some(Event {
            namespace,
            topic,
            body,
            raw: line.to_string(),
        })
    }

    /// A string field of the body (`container_id`, `id`, `exec_id`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name)?.as_str()
    }

    /// `exit_status` of a `/tasks/exit` or `/tasks/delete` body (0 when
    /// omitted, as protobuf JSON leaves out zero values).
    pub fn exit_status(&self) -> Option<u64> {
        if self.body.is_null() {
            return None;
        }
        Some(
            self.body
                .get("exit_status")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        )
    }

    /// True when the event concerns container `id`.
    pub fn is_for(&self, id: &str) -> bool {
        self.field("container_id") == Some(id)
    }
}

/// A running `ctr events` with everything it printed so far. Killed on drop.
pub struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    /// Starts collecting the stdout of an already spawned `ctr events`.
    pub fn collect(mut child: Child) -> Result<Events> {
        let out = child.stdout.take().context("ctr events stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(ev) = Event::parse(&line) {
                    if let Ok(mut v) = sink.lock() {
                        v.push(ev);
                    }
                }
            }
        });
        Ok(Events { child, lines })
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Event> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits until an event matching `pred` arrives.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.all().into_iter().find(|e| pred(e)) {
                return Ok(ev);
            }
            if Instant::now() >= deadline {
                bail!("no event {what} within {timeout:?}; got:\n{}", self.dump());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Topics of the events about container `id`, in arrival order.
    pub fn topics_for(&self, id: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|e| e.is_for(id))
            .map(|e| e.topic)
            .collect()
    }

    /// All lines received, for messages.
    pub fn dump(&self) -> String {
        self.all()
            .iter()
            .map(|e| e.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
