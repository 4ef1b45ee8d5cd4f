//! `Update`: changes what was declared for an existing container, its
//! restart policy and its checkpoint schedule, in the record (so they hold
//! across holdfastd restarts) and at once in what holdfastd does.
//!
//! Resources are not updated here: the shim's Update (`runc update`) is
//! only tested by calling the shim directly, never through containerd's
//! `Tasks.Update`, which holdfastd would use; left out until it is.

use std::sync::Arc;

use holdfast_api::v1::{
    CheckpointSchedule, Container, ContainerSpec, ContainerStatus, RestartPolicy,
};
use tracing::{info, info_span, Instrument};

use super::{status_of, Manager};
use crate::error::{Error, Result};
use crate::restart::should_restart;
use crate::validate::{restart_kind, restart_kind_name, validate_name, validate_spec_fields};

/// What [`Manager::update`] changes; unset fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUpdate {
    /// A new restart policy.
    pub restart: Option<RestartPolicy>,
    /// A new checkpoint schedule.
    pub checkpoint_schedule: Option<CheckpointSchedule>,
    /// Remove the checkpoint schedule.
    pub clear_checkpoint_schedule: bool,
}

impl ContainerUpdate {
    /// `spec` with the update applied and checked: an empty update, a
    /// schedule set and cleared at once, or a result that is not a valid
    /// spec is [`Error::Invalid`] naming the field.
    pub fn apply(&self, spec: &ContainerSpec) -> Result<ContainerSpec> {
        if self.restart.is_none()
            && self.checkpoint_schedule.is_none()
            && !self.clear_checkpoint_schedule
        {
            return Err(Error::invalid(
                "update",
                "nothing to change: give a restart policy or a checkpoint schedule",
            ));
        }
        if self.checkpoint_schedule.is_some() && self.clear_checkpoint_schedule {
            return Err(Error::invalid(
                "checkpoint_schedule",
                "cannot be set and cleared at once",
            ));
        }
        let mut new = spec.clone();
        if let Some(restart) = self.restart {
            new.restart = Some(restart);
        }
        if let Some(schedule) = &self.checkpoint_schedule {
            new.checkpoint_schedule = Some(schedule.clone());
        }
        if self.clear_checkpoint_schedule {
            new.checkpoint_schedule = None;
        }
        validate_spec_fields(&new)?;
        Ok(new)
    }

    /// What it changes, for the log and the event (no values but the
    /// policy and the schedule).
    fn describe(&self, spec: &ContainerSpec) -> String {
        let mut parts = Vec::new();
        if self.restart.is_some() {
            let kind = restart_kind(spec).map_or("?", restart_kind_name);
            parts.push(format!("restart={kind}"));
        }
        if let Some(s) = &self.checkpoint_schedule {
            parts.push(format!("checkpoint-every={} keep={}", s.every, s.keep));
        }
        if self.clear_checkpoint_schedule {
            parts.push("checkpoint schedule removed".to_owned());
        }
        parts.join(" ")
    }
}

impl Manager {
    /// Changes a container's restart policy and/or checkpoint schedule.
    /// Bad input changes nothing. A RESTARTING container whose new policy
    /// would not restart it stays exited; a running container's schedule
    /// is armed again (its next tick one new period after the last) or
    /// stopped.
    pub async fn update(
        self: &Arc<Self>,
        name: &str,
        update: ContainerUpdate,
    ) -> Result<Container> {
        validate_name(name)?;
        let _guard = self.lock(name).await?;
        async {
            let mut record = self.record(name).await?;
            let spec = record.spec.clone().unwrap_or_default();
            let new = update.apply(&spec)?;
            let what = update.describe(&new);
            record.spec = Some(new.clone());
            let status = status_of(&record);
            let state = record.state.get_or_insert_with(Default::default);
            if status == ContainerStatus::Restarting
                && !should_restart(
                    new.restart.as_ref(),
                    state.exit_code,
                    state.restart_count,
                    state.stopped_by_user,
                    false,
                )
            {
                self.life.cancel_restart(name);
                state.status = ContainerStatus::Exited as i32;
            }
            self.put(&record).await?;
            if update.checkpoint_schedule.is_some() || update.clear_checkpoint_schedule {
                if matches!(
                    status_of(&record),
                    ContainerStatus::Running | ContainerStatus::Paused
                ) {
                    self.arm_schedule(&record);
                } else {
                    self.disarm_schedule(name);
                }
            }
            info!(change = %what, "container updated");
            self.event(name, "update", 0, &what);
            Ok(record)
        }
        .instrument(info_span!("update", container = %name))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::v1::RestartPolicyKind;
    use tonic::Code;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            image: "docker.io/library/alpine:3".into(),
            ..Default::default()
        }
    }

    fn schedule(every: &str, keep: u32) -> Option<CheckpointSchedule> {
        Some(CheckpointSchedule {
            every: every.into(),
            keep,
        })
    }

    fn always() -> Option<RestartPolicy> {
        Some(RestartPolicy {
            kind: RestartPolicyKind::Always as i32,
            max_retries: 0,
        })
    }

    fn message(update: &ContainerUpdate, spec: &ContainerSpec) -> String {
        match update.apply(spec) {
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                e.to_string()
            }
            Ok(s) => panic!("{update:?} accepted: {s:?}"),
        }
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let up = ContainerUpdate {
            restart: always(),
            ..Default::default()
        };
        let new = up.apply(&spec()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(new.restart, always());
        assert_eq!(new.image, spec().image);
        assert_eq!(up.describe(&new), "restart=always");

        let up = ContainerUpdate {
            checkpoint_schedule: schedule("1s", 2),
            ..Default::default()
        };
        let scheduled = up.apply(&new).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scheduled.checkpoint_schedule, schedule("1s", 2));
        assert_eq!(scheduled.restart, always(), "the policy stays");
        assert_eq!(up.describe(&scheduled), "checkpoint-every=1s keep=2");

        let up = ContainerUpdate {
            clear_checkpoint_schedule: true,
            ..Default::default()
        };
        let cleared = up.apply(&scheduled).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cleared.checkpoint_schedule, None);
    }

    #[test]
    fn bad_updates_are_refused_naming_the_field() {
        let s = spec();
        assert!(message(&ContainerUpdate::default(), &s).contains("nothing to change"));
        let both = ContainerUpdate {
            checkpoint_schedule: schedule("1m", 1),
            clear_checkpoint_schedule: true,
            ..Default::default()
        };
        assert!(message(&both, &s).contains("set and cleared"));
        let fast = ContainerUpdate {
            checkpoint_schedule: schedule("10ms", 1),
            ..Default::default()
        };
        assert!(message(&fast, &s).contains("(--checkpoint-every) \"10ms\": must be at least 1s"));
        let none_kept = ContainerUpdate {
            checkpoint_schedule: schedule("1m", 0),
            ..Default::default()
        };
        assert!(message(&none_kept, &s).contains("--checkpoint-keep"));
        let garbage = ContainerUpdate {
            checkpoint_schedule: schedule("often", 1),
            ..Default::default()
        };
        assert!(message(&garbage, &s).contains("is not a duration"));
        // --rm and a restart policy do not go together.
        let rm = ContainerSpec {
            auto_remove: true,
            ..spec()
        };
        let up = ContainerUpdate {
            restart: always(),
            ..Default::default()
        };
        assert!(message(&up, &rm).contains("auto_remove"));
    }
}
