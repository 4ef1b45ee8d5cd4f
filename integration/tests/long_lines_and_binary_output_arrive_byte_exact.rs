//! Issue #3: a 64 MiB line without a newline is kept (as `P` records in the
//! journal, reassembled byte-exact), and binary output (every byte value,
//! `\r`, `\0`, invalid UTF-8) arrives byte-exact, on FIFO and `file://`
//! sinks alike.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use holdfast_integration::logs::{self, first_difference, FifoReader};
use holdfast_integration::{each_version, Containerd};

const WAIT: Duration = Duration::from_secs(120);

/// Runs `cat /tmp/<name>` (a file the test put into the rootfs) once into
/// a FIFO and once into a `file://` sink; checks both sinks and both
/// journals hold exactly `data`. Returns the two journals' records.
fn cat_to_fifo_and_file(
    cd: &Containerd,
    name: &str,
    data: &[u8],
) -> Result<Vec<Vec<logs::CriRecord>>> {
    let root = cd.dir().join("journal");
    let opts = logs::write_options(
        cd,
        name,
        &format!(
            "dir = \"{}\"\nbudget_bytes = \"512MiB\"\nmax_segments = 1000\nkeep_after_delete = true\n",
            root.display()
        ),
    )?;
    std::fs::write(cd.rootfs().join("tmp").join(name), data)?;
    let fifo = cd.dir().join(format!("{name}.fifo"));
    logs::mkfifo(&fifo)?;
    let file = cd.dir().join(format!("{name}.log"));
    let reader = FifoReader::open(&fifo)?;
    let cat = format!("/tmp/{name}");
    let mut ids = Vec::new();
    for uri in [
        fifo.display().to_string(),
        format!("file://{}", file.display()),
    ] {
        let id = cd.id();
        let flags = logs::run_flags(&opts, &uri);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut f = vec!["-d"];
        f.extend_from_slice(&flags);
        cd.run(&f, &id, &["/bin/cat", &cat])?.ok()?;
        cd.remember_shim_address(&id);
        ids.push(id);
    }
    for id in &ids {
        cd.wait_status(id, "STOPPED", WAIT)?;
    }

    reader.wait_len(data.len(), WAIT)?;
    std::thread::sleep(Duration::from_millis(300));
    let got = reader.close()?;
    ensure!(got == data, "FIFO sink: {}", first_difference(&got, data));
    let got = logs::wait_file_len(&file, data.len() as u64, WAIT)?;
    ensure!(
        got == data,
        "file:// sink: {}",
        first_difference(&got, data)
    );

    let mut all = Vec::new();
    for id in &ids {
        let task = logs::task_journal(cd, &root, id);
        let records = wait_journal(&task, data.len(), WAIT)?;
        let mut rebuilt = Vec::with_capacity(data.len());
        for r in &records {
            rebuilt.extend_from_slice(&r.raw());
        }
        ensure!(
            rebuilt == data,
            "journal {}: {}",
            task.display(),
            first_difference(&rebuilt, data)
        );
        all.push(records);
    }
    cd.assert_clean()?;
    Ok(all)
}

/// The stdout records of a task's journal, once they stand for at least
/// `len` bytes.
fn wait_journal(task: &Path, len: usize, timeout: Duration) -> Result<Vec<logs::CriRecord>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut records = Vec::new();
        let mut have = 0;
        logs::for_each_journal_record(task, "init", "stdout", |r| {
            have += r.raw().len();
            records.push(r.clone());
            Ok(())
        })?;
        if have >= len || std::time::Instant::now() >= deadline {
            return Ok(records);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_64_mib_line_without_a_newline_is_kept_in_partial_records() {
    each_version(|cd| {
        let data = logs::pseudo_random_bytes(64 << 20, 0x5eed, false);
        ensure!(!data.contains(&b'\n'));
        let journals = cat_to_fifo_and_file(cd, "line.bin", &data)?;
        for records in journals {
            ensure!(
                records.len() > 1,
                "a 64 MiB line must be split into records"
            );
            ensure!(
                records.iter().all(|r| r.partial),
                "a line without a newline must be only P records; {} of {} are F",
                records.iter().filter(|r| !r.partial).count(),
                records.len()
            );
        }
        Ok(())
    });
}

#[test]
fn binary_output_arrives_byte_exact() {
    each_version(|cd| {
        let data = random_bytes(1_000_000)?;
        ensure!(data.contains(&b'\n') && data.contains(&b'\r') && data.contains(&0));
        cat_to_fifo_and_file(cd, "random.bin", &data)?;
        Ok(())
    });
}

/// `len` bytes of /dev/urandom.
fn random_bytes(len: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .context("read /dev/urandom")?;
    Ok(data)
}
