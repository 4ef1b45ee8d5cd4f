//! Issue #2, "An event the shim cannot deliver while containerd is down is
//! delivered when it returns, not dropped after a few seconds."
//!
//! The task exits while containerd is down, so the shim's `/tasks/exit`
//! cannot be forwarded. containerd stays down longer than the Go and
//! rust-extensions publishers retry (about 15 s, NOTES.md), then comes back.
//! Delivery is observed two ways, either suffices: containerd's debug log
//! says `event forwarded ... topic=/tasks/exit` for our namespace after the
//! restart, or a `ctr events` subscriber started right after the restart
//! receives the `/tasks/exit` (containerd does not replay events to late
//! subscribers, so only a late redelivery by the shim can reach it).
//!
//! EXPECTED TO DIFFER ON THE GO SHIM: `io.containerd.runc.v2` drops the event
//! after its retries, so against it this test asserts the event is *not*
//! delivered, which also shows the observation can tell the two apart.
//!
//! `HOLDFAST_IT_OUTAGE_SECS` (default 22) sets the outage.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use holdfast_integration::{each_version, env_usize, is_go_shim, procs, Containerd, Events};

/// Whether the shim's `/tasks/exit` for `id` reached containerd after the
/// log offset `since`, within `window`.
fn delivered(
    cd: &Containerd,
    events: &Events,
    id: &str,
    since: usize,
    window: Duration,
) -> Option<String> {
    let deadline = Instant::now() + window;
    loop {
        let log = cd.log();
        let fresh = log.get(since..).unwrap_or_default();
        if let Some(line) = fresh.lines().find(|l| {
            l.contains("event forwarded")
                && l.contains("topic=/tasks/exit")
                && l.contains(&format!("ns={}", cd.namespace()))
        }) {
            return Some(format!("containerd log: {line}"));
        }
        if let Some(ev) = events
            .all()
            .into_iter()
            .find(|e| e.topic == "/tasks/exit" && e.is_for(id))
        {
            return Some(format!("subscriber: {}", ev.raw));
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_exit_event_published_while_containerd_is_down_is_delivered_after_it_returns() {
    each_version(|cd| {
        let outage = Duration::from_secs(env_usize("HOLDFAST_IT_OUTAGE_SECS", 22) as u64);
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sh", "-c", &Containerd::trigger_script(&id, 5)])?;

        cd.kill9()?;
        let down_at = Instant::now();
        cd.fire(&id)?;
        ensure!(
            procs::wait_gone(pid, Duration::from_secs(20)),
            "container {pid} did not exit"
        );
        // Deliberately keep containerd down: this is the outage under test.
        if let Some(rest) = outage.checked_sub(down_at.elapsed()) {
            thread::sleep(rest);
        }
        let since = cd.log().len();
        cd.restart()?;
        let events = cd.events()?;

        if is_go_shim() {
            // Known weakness of the Go shim: the event was dropped. (With
            // containerd 1.7 the exited task is also removed on start-up,
            // "cleaning leaked shim process", as its Pids answer is empty;
            // then nobody deletes ctr's FIFOs of it.)
            if let Some(how) = delivered(cd, &events, &id, since, Duration::from_secs(10)) {
                bail!("the Go shim was expected to drop the event, yet it arrived: {how}");
            }
            cd.remove_all()?;
            cd.remove_client_fifos(&id);
            return cd.assert_clean();
        } else if delivered(cd, &events, &id, since, Duration::from_secs(30)).is_none() {
            bail!(
                "the /tasks/exit of {id}, published while containerd was down for {outage:?}, \
                 never reached containerd after it returned; events seen:\n{}",
                events.dump()
            );
        }
        cd.wait_status(&id, "STOPPED", Duration::from_secs(20))?;
        cd.assert_clean()
    });
}
