//! `holdfast export`, `holdfast import` and `holdfast migrate`.
//!
//! Export writes the archive to a temporary file (0600) next to the output
//! and renames it into place once the stream ended well, so a failed export
//! leaves no partial archive. Import streams the file in chunks. Both show
//! a progress bar on stderr when it is a terminal.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use holdfast_api::v1::{
    import_request, ExportRequest, ImportOptions, ImportRequest, MigrateRequest,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use crate::args::{ExportArgs, ImportArgs, MigrateArgs};
use crate::commands::Client;
use crate::error::status_err;

/// Bytes of the file per import message.
const CHUNK_BYTES: usize = 256 << 10;

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// The temporary file an export writes before it is renamed to `output`.
fn partial_path(output: &Path) -> Result<PathBuf> {
    let name = output
        .file_name()
        .with_context(|| format!("-o {}: not a file name", output.display()))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(format!(".{}.partial", std::process::id()));
    Ok(output.with_file_name(partial))
}

/// `holdfast export NAME CHECKPOINT -o FILE`: prints FILE.
pub async fn export(client: &mut Client, args: ExportArgs) -> Result<i32> {
    let partial = partial_path(&args.output)?;
    let mut stream = client
        .export(ExportRequest {
            container: args.name.clone(),
            checkpoint: args.checkpoint.clone(),
        })
        .await
        .map_err(status_err(None))?
        .into_inner();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("create {}", partial.display()))?;
    let mut bar: Option<ProgressBar> = None;
    let written = async {
        while let Some(chunk) = stream.message().await.map_err(status_err(None))? {
            let bar = bar.get_or_insert_with(|| progress(chunk.total_bytes, "export"));
            bar.set_position(chunk.done_bytes);
            file.write_all(&chunk.data)
                .with_context(|| format!("write {}", partial.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("sync {}", partial.display()))?;
        std::fs::rename(&partial, &args.output)
            .with_context(|| format!("rename to {}", args.output.display()))?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    println!("{}", args.output.display());
    Ok(0)
}

/// `holdfast import FILE [--name N] [--rootfs DIR]`: prints `NAME
/// CHECKPOINT`.
pub async fn import(client: &mut Client, args: ImportArgs) -> Result<i32> {
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("open {}", args.file.display()))?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("stat {}", args.file.display()))?
        .len();
    let bar = progress(size, "import");
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(4);
    let first = ImportRequest {
        msg: Some(import_request::Msg::Options(ImportOptions {
            name: args.name.unwrap_or_default(),
            rootfs: args.rootfs.unwrap_or_default(),
        })),
    };
    if tx.send(first).await.is_err() {
        bail!("import: the request stream closed");
    }
    let reader = {
        let bar = bar.clone();
        let path = args.file.clone();
        tokio::spawn(async move {
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let n = file
                    .read(&mut data)
                    .await
                    .with_context(|| format!("read {}", path.display()))?;
                if n == 0 {
                    return Ok::<_, anyhow::Error>(());
                }
                data.truncate(n);
                bar.inc(n as u64);
                let msg = ImportRequest {
                    msg: Some(import_request::Msg::Data(data)),
                };
                if tx.send(msg).await.is_err() {
                    // holdfastd answered (refused the archive) before the end.
                    return Ok(());
                }
            }
        })
    };
    let answer = client
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    bar.finish_and_clear();
    let answer = answer.map_err(status_err(None))?.into_inner();
    reader.await.context("the file reader")??;
    let name = answer
        .container
        .and_then(|c| c.spec)
        .map(|s| s.name)
        .unwrap_or_default();
    let checkpoint = answer.checkpoint.map(|c| c.name).unwrap_or_default();
    println!("{name} {checkpoint}");
    Ok(0)
}

/// `holdfast migrate NAME --to unix://OTHER.sock`: prints the name on the
/// target.
pub async fn migrate(client: &mut Client, args: MigrateArgs) -> Result<i32> {
    let answer = client
        .migrate(MigrateRequest {
            container: args.name.clone(),
            target: args.to,
            name: args.new_name.unwrap_or_default(),
            keep_source: args.keep_source,
        })
        .await
        .map_err(status_err(Some(&args.name)))?
        .into_inner();
    let name = answer
        .container
        .and_then(|c| c.spec)
        .map(|s| s.name)
        .unwrap_or_default();
    println!("{name}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_is_written_next_to_its_output_under_a_hidden_name() {
        let p = partial_path(Path::new("/srv/web.hfa")).expect("partial");
        assert_eq!(p.parent(), Some(Path::new("/srv")));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            name.starts_with(".web.hfa.") && name.ends_with(".partial"),
            "{name}"
        );
        assert!(partial_path(Path::new("/")).is_err());
    }
}
