//! The writer of one stream: encodes, appends, rotates, accounts the budget
//! and applies the full policy.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fallocate, FallocateFlags};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::background;
use crate::config::FullPolicy;
use crate::error::{JournalError, Result};
use crate::journal::{Key, Shared};
use crate::reader::Cursor;
use crate::record::{encode_append, format_timestamp, push_record, Stream};
use crate::segment::segment_path;

/// How long [`StreamWriter::wait_for_space`] waits at most: space freed on
/// the filesystem by someone else sends no notification.
pub const SPACE_RETRY: Duration = Duration::from_secs(1);

/// Why an append found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullCause {
    /// The task's budget is spent by segments some consumer has not read.
    Budget,
    /// The filesystem said `ENOSPC` or `EDQUOT`.
    Filesystem,
}

/// What [`StreamWriter::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Appended {
    /// Every byte was written (`records` records, `bytes` bytes on disk,
    /// including a drop marker written first, if one was due).
    Written {
        /// Records written.
        records: usize,
        /// Bytes added to segment files.
        bytes: u64,
    },
    /// Policy `block`: no room for all of it. The first `accepted` bytes of
    /// the input were written (the records that fit); keep the rest, stop
    /// reading the container's pipe, [`StreamWriter::wait_for_space`], and
    /// append the rest again.
    Full {
        /// Input bytes written before the journal was full.
        accepted: usize,
        /// Budget or filesystem.
        cause: FullCause,
    },
    /// Policy `drop`: no room; the input after its first `accepted` bytes
    /// was dropped and counted, and a marker record will say so.
    Dropped {
        /// Input bytes written before the journal was full.
        accepted: usize,
        /// Input bytes dropped.
        dropped: u64,
        /// Budget or filesystem.
        cause: FullCause,
    },
}

struct Current {
    seq: u64,
    file: File,
    size: u64,
    /// Blocks are claimed (`fallocate`) up to here.
    claimed: u64,
    path: PathBuf,
}

/// How far ahead of the data blocks are claimed: one `fallocate` per this
/// many bytes, not one per append. The claim never passes the segment size,
/// and what a finished segment did not use is given back.
const CLAIM_AHEAD: u64 = 1 << 20;

enum Failure {
    NoSpace(FullCause),
    Other(JournalError),
}

/// Appends one process stream's output to its segment files. Made by
/// [`crate::Journal::writer`]; one per stream at a time.
///
/// Every append is one `write(2)` per segment it touches (one, unless it is
/// larger than what is left of a segment and of the next). Nothing here
/// blocks on anything but the local filesystem.
pub struct StreamWriter {
    shared: Arc<Shared>,
    key: Key,
    cur: Option<Current>,
    dirty: bool,
    last_sync: Instant,
    dropped_pending: u64,
    dropped_total: u64,
    space_rx: watch::Receiver<u64>,
    buf: Vec<u8>,
    ends: Vec<(usize, usize)>,
    fallocate_ok: bool,
    /// A `sync_if_due` fsync is running in the background.
    syncing: Arc<AtomicBool>,
    /// Appended, not fsynced yet (besides the current segment).
    unsynced: Unsynced,
    /// The cursor just after the last byte written.
    end: Option<Cursor>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("process", &self.key.0)
            .field("stream", &self.key.1)
            .field("segment", &self.cur.as_ref().map(|c| c.seq))
            .field("dropped_pending", &self.dropped_pending)
            .finish()
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl StreamWriter {
    pub(crate) fn new(shared: Arc<Shared>, key: Key) -> StreamWriter {
        let space_rx = shared.space_tx.subscribe();
        StreamWriter {
            shared,
            key,
            cur: None,
            dirty: false,
            last_sync: Instant::now(),
            dropped_pending: 0,
            dropped_total: 0,
            space_rx,
            buf: Vec::new(),
            ends: Vec::new(),
            fallocate_ok: true,
            syncing: Arc::new(AtomicBool::new(false)),
            unsynced: Unsynced::default(),
            end: None,
        }
    }

    /// The cursor just after the last byte this writer wrote (a consumer
    /// [`Consumer::seek`](crate::Consumer::seek)ing there reads what is
    /// appended next); `None` before its first write.
    pub fn end(&self) -> Option<Cursor> {
        self.end
    }

    /// Frees the encoding buffers (they grow to the largest append): call
    /// it when the stream went quiet, so that an idle stream holds no
    /// memory. The next append allocates them again.
    pub fn release_buffers(&mut self) {
        self.buf = Vec::new();
        self.ends = Vec::new();
    }

    /// The process id this writer writes for.
    pub fn process(&self) -> &str {
        &self.key.0
    }

    /// The stream this writer writes.
    pub fn stream(&self) -> Stream {
        self.key.1
    }

    /// Bytes this writer dropped (policy `drop`) since it was made.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_total
    }

    /// Dropped bytes no marker record reports yet.
    pub fn pending_drop_marker(&self) -> u64 {
        self.dropped_pending
    }

    /// Appends what was read from the container, stamped `now`: complete
    /// lines become `F` records, the bytes after the last `\n` a `P` record,
    /// text longer than the record size is cut into `P` records.
    ///
    /// The append is accounted against the budget first; if it does not
    /// fit, consumed segments are deleted, oldest first; if it still does
    /// not fit (or the filesystem is full), the records that fit are written
    /// and the policy applies to the rest ([`Appended::Full`] or
    /// [`Appended::Dropped`] with the input bytes `accepted`). Errors are I/O
    /// failures other than a full filesystem.
    pub fn append(&mut self, bytes: &[u8], now: OffsetDateTime) -> Result<Appended> {
        if bytes.is_empty() {
            return Ok(Appended::Written {
                records: 0,
                bytes: 0,
            });
        }
        // Mark the current space generation seen before looking for room, so
        // that `wait_for_space` cannot miss a release that happens after.
        self.space_rx.borrow_and_update();
        let ts = format_timestamp(now);
        self.buf.clear();
        self.ends.clear();
        let marker = self.dropped_pending > 0;
        if marker {
            self.push_marker(&ts);
        }
        let config = &self.shared.config;
        encode_append(
            &mut self.buf,
            &mut self.ends,
            &ts,
            self.key.1,
            bytes,
            config.max_record_bytes,
        );
        let policy = config.policy;
        let (written_records, failure) = self.write_buf();
        let written_bytes = self.ends[..written_records].last().map_or(0, |e| e.0) as u64;
        let accepted = self.ends[..written_records].last().map_or(0, |e| e.1);
        if marker && written_records > 0 {
            tracing::info!(
                process = %self.key.0, stream = %self.key.1, dropped = self.dropped_pending,
                "journal has room again; wrote the drop marker"
            );
            self.dropped_pending = 0;
        }
        let cause = match failure {
            None => {
                return Ok(Appended::Written {
                    records: written_records - usize::from(marker),
                    bytes: written_bytes,
                })
            }
            Some(Failure::Other(e)) => return Err(e),
            Some(Failure::NoSpace(cause)) => cause,
        };
        match policy {
            FullPolicy::Block => Ok(Appended::Full { accepted, cause }),
            FullPolicy::Drop => {
                let dropped = (bytes.len() - accepted) as u64;
                self.count_drop(dropped);
                Ok(Appended::Dropped {
                    accepted,
                    dropped,
                    cause,
                })
            }
        }
    }

    fn push_marker(&mut self, ts: &str) {
        let text = format!(
            "holdfast: dropped {} bytes (log budget full)",
            self.dropped_pending
        );
        push_record(&mut self.buf, ts, self.key.1, false, text.as_bytes());
        self.ends.push((self.buf.len(), 0));
    }

    fn count_drop(&mut self, n: u64) {
        if self.dropped_pending == 0 && n > 0 {
            tracing::warn!(process = %self.key.0, stream = %self.key.1, "journal full: dropping output (policy drop)");
        }
        self.dropped_pending += n;
        self.dropped_total += n;
        self.shared.lock().dropped_total += n;
    }

    /// Writes the pending drop marker now, if there is one and it fits.
    /// `Ok(true)` when no marker is pending any more.
    pub fn flush_drop_marker(&mut self, now: OffsetDateTime) -> Result<bool> {
        if self.dropped_pending == 0 {
            return Ok(true);
        }
        self.buf.clear();
        self.ends.clear();
        self.push_marker(&format_timestamp(now));
        let (n, failure) = self.write_buf();
        if let Some(Failure::Other(e)) = failure {
            return Err(e);
        }
        if n > 0 {
            tracing::info!(process = %self.key.0, stream = %self.key.1, dropped = self.dropped_pending, "wrote the drop marker");
            self.dropped_pending = 0;
        }
        Ok(n > 0)
    }

    /// Whether there is a current segment and every consumer has read it.
    fn current_read_by_all(&self) -> bool {
        let Some(cur) = &self.cur else {
            return false;
        };
        let mut st = self.shared.lock();
        st.stream(&self.key).read_by_all(cur.seq, cur.size)
    }

    /// Reserves room in the budget for the longest run of `self.ends`'
    /// records from record `first` on that fits (all of them if it can):
    /// the index after the last record reserved (`first` when none fits).
    /// A current segment every consumer has read is finished first if that
    /// makes room (it cannot be deleted while it is current).
    fn reserve_records(&mut self, first: usize) -> usize {
        let base = first.checked_sub(1).map_or(0, |i| self.ends[i].0) as u64;
        let need = self.buf.len() as u64 - base;
        let mut granted = self.shared.reserve_up_to(&mut self.shared.lock(), need);
        if granted < need && self.current_read_by_all() {
            self.shared.lock().used -= granted;
            self.finish_segment();
            granted = self.shared.reserve_up_to(&mut self.shared.lock(), need);
        }
        let fit = if granted == need {
            self.ends.len()
        } else {
            self.ends.partition_point(|e| e.0 as u64 <= base + granted)
        };
        let used = fit.checked_sub(1).map_or(0, |i| self.ends[i].0) as u64 - base;
        let mut st = self.shared.lock();
        st.used = st.used.saturating_sub(granted - used);
        fit.max(first)
    }

    /// Writes `self.buf` (records ending at `self.ends`): reserves it in the
    /// budget (as much as fits), rotates, writes. When only part of it fits,
    /// the part is written and the rest reserved again: the rotations while
    /// writing retire read segments beyond `max_segments`, so one append
    /// larger than the room left (a full pipe under a small budget) is not
    /// cut short by segments it is itself about to make deletable. Returns
    /// how many records were written and why it stopped early.
    fn write_buf(&mut self) -> (usize, Option<Failure>) {
        let seg_bytes = self.shared.config.segment_bytes;
        let mut start = 0usize;
        let mut idx = 0usize;
        let mut failure = None;
        while idx < self.ends.len() && failure.is_none() {
            let fit = self.reserve_records(idx);
            if fit == idx {
                failure = Some(Failure::NoSpace(FullCause::Budget));
                break;
            }
            let need = self.ends[fit - 1].0 as u64;
            while idx < fit {
                // Rotate first when the rest does not fit in the current
                // segment, so an append smaller than a segment is one write
                // in one file.
                let rest = need - start as u64;
                let rotate = match &self.cur {
                    Some(c) => c.size > 0 && c.size + rest > seg_bytes,
                    None => false,
                };
                if rotate {
                    self.finish_segment();
                }
                if self.cur.is_none() {
                    if let Err(f) = self.open_next() {
                        failure = Some(f);
                        break;
                    }
                }
                let size = self.cur.as_ref().map_or(0, |c| c.size);
                // The records that fit in this segment (at least one).
                let mut end_idx = idx + 1;
                while end_idx < fit && size + (self.ends[end_idx].0 - start) as u64 <= seg_bytes {
                    end_idx += 1;
                }
                let end = self.ends[end_idx - 1].0;
                if let Err(f) = self.write_batch(start, end) {
                    failure = Some(f);
                    break;
                }
                start = end;
                idx = end_idx;
            }
            if failure.is_some() {
                // Give back what was reserved and not written.
                let mut st = self.shared.lock();
                st.used = st.used.saturating_sub(need - start as u64);
            }
        }
        let mut st = self.shared.lock();
        if start > 0 {
            st.stream(&self.key)
                .data_tx
                .send_modify(|g| *g = g.wrapping_add(1));
            if st.fs_full && failure.is_none() {
                st.fs_full = false;
                tracing::info!(dir = %self.shared.config.dir.display(), "journal filesystem has room again");
            }
        }
        (idx, failure)
    }

    fn write_batch(&mut self, start: usize, end: usize) -> std::result::Result<(), Failure> {
        let Some(cur) = self.cur.as_mut() else {
            return Err(Failure::Other(JournalError::io(
                "write",
                self.shared.config.dir.clone(),
                std::io::Error::other("no current segment"),
            )));
        };
        let len = (end - start) as u64;
        if self.fallocate_ok && cur.size + len > cur.claimed {
            // Claim the blocks first: a full filesystem then fails here, with
            // nothing written that a reader could have seen. Claim ahead
            // where the segment has room, exactly what is needed if that
            // much is not there.
            let seg = self.shared.config.segment_bytes;
            let want = (cur.size + len.max(CLAIM_AHEAD)).min(seg.max(cur.size + len));
            let mut claimed = None;
            for upto in [want, cur.size + len] {
                match fallocate(
                    &cur.file,
                    FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    cur.claimed.max(cur.size) as libc::off_t,
                    (upto - cur.claimed.max(cur.size)) as libc::off_t,
                ) {
                    Ok(()) => {
                        claimed = Some(upto);
                        break;
                    }
                    Err(nix::errno::Errno::ENOSPC) | Err(nix::errno::Errno::EDQUOT) => continue,
                    Err(_) => {
                        self.fallocate_ok = false;
                        break;
                    }
                }
            }
            match claimed {
                Some(upto) => cur.claimed = upto,
                None if self.fallocate_ok => {
                    self.note_no_space(&std::io::Error::from_raw_os_error(libc::ENOSPC));
                    return Err(Failure::NoSpace(FullCause::Filesystem));
                }
                None => {}
            }
        }
        let data = &self.buf[start..end];
        let Some(cur) = self.cur.as_mut() else {
            return Err(Failure::NoSpace(FullCause::Filesystem));
        };
        if let Err(e) = cur.file.write_all(data) {
            // Cut a partial write back to the last record boundary.
            if let Err(te) = cur.file.set_len(cur.size) {
                tracing::error!(path = %cur.path.display(), error = %te, "cannot cut a partly written record");
            }
            cur.claimed = cur.size;
            if is_no_space(&e) {
                self.note_no_space(&e);
                return Err(Failure::NoSpace(FullCause::Filesystem));
            }
            return Err(Failure::Other(JournalError::io(
                "write",
                cur.path.clone(),
                e,
            )));
        }
        cur.size += len;
        self.dirty = true;
        let (seq, size) = (cur.seq, cur.size);
        self.end = Some(Cursor {
            segment: seq,
            offset: size,
        });
        let mut st = self.shared.lock();
        if let Some(info) = st.stream(&self.key).segments.get_mut(&seq) {
            info.size = size;
        }
        Ok(())
    }

    fn note_no_space(&self, e: &std::io::Error) {
        let mut st = self.shared.lock();
        if !st.fs_full {
            st.fs_full = true;
            tracing::warn!(
                dir = %self.shared.config.dir.display(), error = %e, policy = self.shared.config.policy.as_str(),
                "journal filesystem is full; applying the full policy until it has room again"
            );
        }
    }

    fn classify(&self, op: &'static str, path: &std::path::Path, e: std::io::Error) -> Failure {
        if is_no_space(&e) {
            self.note_no_space(&e);
            Failure::NoSpace(FullCause::Filesystem)
        } else {
            Failure::Other(JournalError::io(op, path, e))
        }
    }

    /// Creates the next segment and makes it current.
    fn open_next(&mut self) -> std::result::Result<(), Failure> {
        let dir = self.shared.config.dir.clone();
        let pdir = dir.join(&self.key.0);
        if let Err(e) = std::fs::create_dir_all(&pdir) {
            return Err(self.classify("create folder", &pdir, e));
        }
        loop {
            let seq = self.shared.lock().stream(&self.key).next_seq;
            let path = segment_path(&dir, &self.key.0, self.key.1, seq);
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
            {
                Ok(file) => {
                    // The new name is made durable with the data, by the
                    // next due sync: a folder fsync commits the filesystem's
                    // journal, which waits for earlier data to be written.
                    self.unsynced.folder = Some(pdir);
                    self.shared.lock().add_segment(&self.key, seq);
                    self.cur = Some(Current {
                        seq,
                        file,
                        size: 0,
                        claimed: 0,
                        path,
                    });
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Never overwrite: skip a number some earlier run used.
                    let mut st = self.shared.lock();
                    let ss = st.stream(&self.key);
                    ss.next_seq = ss.next_seq.max(seq + 1);
                }
                Err(e) => return Err(self.classify("create", &path, e)),
            }
        }
    }

    /// Closes the current segment; the next append starts a new one. Its
    /// unsynced data is fsynced with the next due sync (or at close).
    fn finish_segment(&mut self) {
        let Some(cur) = self.cur.take() else {
            return;
        };
        let Current {
            seq,
            file,
            path,
            size,
            claimed,
        } = cur;
        if self.dirty || claimed > size {
            self.unsynced.files.push(Finished {
                file,
                path,
                unused: (size, claimed.saturating_sub(size)),
            });
        }
        self.dirty = false;
        let mut st = self.shared.lock();
        let ss = st.stream(&self.key);
        if ss.current == Some(seq) {
            ss.current = None;
        }
        self.shared.prune_retained(&mut st, &self.key);
    }

    /// Closes the current segment so that the next append starts a new
    /// one, as size-based rotation does.
    pub fn rotate(&mut self) -> Result<()> {
        self.finish_segment();
        Ok(())
    }

    /// Whether anything appended is not fsynced yet.
    fn needs_sync(&self) -> bool {
        self.dirty || !self.unsynced.is_empty()
    }

    /// Hands everything not fsynced yet (finished segments, the current
    /// one, new folder entries) to one background job.
    fn sync_in_background(&mut self) -> Result<()> {
        let mut work = std::mem::take(&mut self.unsynced);
        if let (true, Some(cur)) = (self.dirty, &self.cur) {
            // A second descriptor of the segment: the writer may rotate and
            // close its own while the fsync runs.
            let file = cur
                .file
                .try_clone()
                .map_err(|e| JournalError::io("dup", cur.path.clone(), e))?;
            work.files.push(Finished {
                file,
                path: cur.path.clone(),
                unused: (0, 0),
            });
        }
        self.dirty = false;
        let syncing = self.syncing.clone();
        syncing.store(true, Ordering::Release);
        background::run(&self.shared.jobs, move || {
            work.sync();
            syncing.store(false, Ordering::Release);
        });
        Ok(())
    }

    /// fsyncs what was appended (the current segment, segments finished
    /// since the last fsync, the folder entries of new segments) in the
    /// background, if there is any and the fsync interval has passed since
    /// the last fsync; also writes a pending drop marker if it now fits.
    /// Call it from a timer (e.g. every interval). `Ok(true)` when it
    /// started an fsync.
    ///
    /// One fsync per interval, not one per segment: on a busy disk an fsync
    /// (and the filesystem journal commit it forces) takes tens of
    /// milliseconds.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<bool> {
        if self.dropped_pending > 0 {
            self.flush_drop_marker(OffsetDateTime::now_utc())?;
        }
        if !self.needs_sync()
            || now.saturating_duration_since(self.last_sync) < self.shared.config.fsync_interval
            || self.syncing.load(Ordering::Acquire)
        {
            return Ok(false);
        }
        self.sync_in_background()?;
        self.last_sync = now;
        Ok(true)
    }

    /// fsyncs everything appended so far, before it returns.
    pub fn sync(&mut self) -> Result<()> {
        let work = std::mem::take(&mut self.unsynced);
        if let (true, Some(cur)) = (self.dirty, &self.cur) {
            cur.file
                .sync_data()
                .map_err(|e| JournalError::io("fsync", cur.path.clone(), e))?;
        }
        self.dirty = false;
        work.sync();
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Waits until space may have been freed since the last append looked
    /// for room (a consumer committed past a segment or went away, a segment
    /// was deleted), or [`SPACE_RETRY`] at most. Then append again.
    pub async fn wait_for_space(&mut self) {
        // Finished segments stay open until their fsync: close them now, so
        // that a deleted one gives its blocks back to a full filesystem.
        if !self.unsynced.files.is_empty() {
            if let Err(e) = self.sync_in_background() {
                tracing::warn!(error = %e, "cannot fsync finished journal segments");
            }
        }
        let _ = tokio::time::timeout(SPACE_RETRY, self.space_rx.changed()).await;
    }

    /// Writes a pending drop marker if it fits, and closes the stream (e.g.
    /// when its process exited), fsyncing it in the background. Dropping the
    /// writer does the same, best effort.
    pub fn close(mut self) -> Result<()> {
        self.flush_drop_marker(OffsetDateTime::now_utc())?;
        self.finish_segment();
        self.sync_in_background()
    }
}

/// A finished segment with unsynced data or unused claimed blocks.
#[derive(Debug)]
struct Finished {
    file: File,
    path: PathBuf,
    /// The data's size, and how many claimed bytes lie past it.
    unused: (u64, u64),
}

/// What a writer appended and has not fsynced yet, apart from its current
/// segment.
#[derive(Debug, Default)]
struct Unsynced {
    /// Finished segments with unsynced data or unused claims.
    files: Vec<Finished>,
    /// A process folder that got a new segment file (its entry is made
    /// durable by fsyncing the folder).
    folder: Option<PathBuf>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.folder.is_none()
    }

    /// fsyncs it all; failures can only be logged (this runs after the
    /// append that wrote the data returned).
    fn sync(self) {
        for f in &self.files {
            let (size, unused) = f.unused;
            if unused > 0 {
                // Give the unused claim back: truncating to the size it has
                // frees the blocks past the end.
                if let Err(e) = f.file.set_len(size) {
                    tracing::debug!(path = %f.path.display(), error = %e, "cannot release unused journal blocks");
                }
            }
            if let Err(e) = f.file.sync_data() {
                tracing::warn!(path = %f.path.display(), error = %e, "journal fsync failed");
            }
        }
        if let Some(dir) = &self.folder {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %dir.display(), error = %e, "journal folder fsync failed");
            }
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.dropped_pending > 0 {
            let _ = self.flush_drop_marker(OffsetDateTime::now_utc());
        }
        self.finish_segment();
        if self.needs_sync() {
            if let Err(e) = self.sync_in_background() {
                tracing::warn!(error = %e, "cannot fsync the last journal segment");
            }
        }
        let mut st = self.shared.lock();
        st.stream(&self.key).has_writer = false;
        drop(st);
        self.shared.notify_space();
    }
}
