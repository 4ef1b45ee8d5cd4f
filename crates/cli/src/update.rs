//! `holdfast update`: a new restart policy or checkpoint schedule for
//! existing containers.

use anyhow::Result;
use holdfast_api::v1::UpdateRequest;

use crate::args::UpdateArgs;
use crate::commands::{for_each, Client};
use crate::error::status_err;

/// The request of `update` (for each container, with its name).
pub fn request(args: &UpdateArgs) -> UpdateRequest {
    UpdateRequest {
        name: String::new(),
        restart: args.restart,
        checkpoint_schedule: args.schedule.schedule(),
        clear_checkpoint_schedule: args.no_checkpoint_schedule,
    }
}

/// Sends the update to each named container, printing each name updated.
pub async fn update(client: &mut Client, args: UpdateArgs) -> Result<i32> {
    let template = request(&args);
    for_each(client, &args.names, true, move |client, name| {
        let request = UpdateRequest {
            name: name.clone(),
            ..template.clone()
        };
        Box::pin(async move {
            client
                .update(request)
                .await
                .map_err(status_err(Some(&name)))?;
            Ok(())
        })
    })
    .await
}
