//! `holdfast checkpoint create|ls|rm` and `holdfast restore`.

use anyhow::Result;
use holdfast_api::v1::{
    CreateCheckpointRequest, ListCheckpointsRequest, RemoveCheckpointRequest, RestoreRequest,
};
use time::OffsetDateTime;

use crate::args::{CheckpointArgs, CheckpointCommand, CheckpointCreateArgs, CheckpointLsArgs};
use crate::commands::Client;
use crate::error::status_err;
use crate::output;

/// Runs a `checkpoint` subcommand; its exit code.
pub async fn checkpoint(client: &mut Client, command: CheckpointCommand) -> Result<i32> {
    match command {
        CheckpointCommand::Create(args) => create(client, args).await,
        CheckpointCommand::Ls(args) => ls(client, args).await,
        CheckpointCommand::Rm(args) => rm(client, args).await,
    }
}

async fn create(client: &mut Client, args: CheckpointCreateArgs) -> Result<i32> {
    let request = CreateCheckpointRequest {
        container: args.name,
        name: args.checkpoint.unwrap_or_default(),
        leave_running: args.leave_running,
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
    };
    let checkpoint = client
        .create_checkpoint(request)
        .await
        .map_err(status_err(None))?
        .into_inner()
        .checkpoint
        .unwrap_or_default();
    println!("{}", checkpoint.name);
    Ok(0)
}

async fn ls(client: &mut Client, args: CheckpointLsArgs) -> Result<i32> {
    let request = ListCheckpointsRequest {
        container: args.name.clone(),
    };
    let checkpoints = client
        .list_checkpoints(request)
        .await
        .map_err(status_err(Some(&args.name)))?
        .into_inner()
        .checkpoints;
    if args.json {
        print!("{}", output::checkpoints_json(&checkpoints));
    } else {
        print!(
            "{}",
            output::checkpoints_table(&checkpoints, OffsetDateTime::now_utc())
        );
    }
    Ok(0)
}

async fn rm(client: &mut Client, args: CheckpointArgs) -> Result<i32> {
    let request = RemoveCheckpointRequest {
        container: args.name,
        name: args.checkpoint.clone(),
    };
    client
        .remove_checkpoint(request)
        .await
        .map_err(status_err(None))?;
    println!("{}", args.checkpoint);
    Ok(0)
}

/// `holdfast restore NAME CHECKPOINT`: prints the container's name.
pub async fn restore(client: &mut Client, args: CheckpointArgs) -> Result<i32> {
    let request = RestoreRequest {
        container: args.name.clone(),
        checkpoint: args.checkpoint,
    };
    client.restore(request).await.map_err(status_err(None))?;
    println!("{}", args.name);
    Ok(0)
}
