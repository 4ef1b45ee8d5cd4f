//! The journal of one task: shared state, the disk budget, consumers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::background::{self, Jobs};
use crate::config::{JournalConfig, MIN_SEGMENT_BYTES};
use crate::error::{JournalError, Result};
use crate::reader::{Consumer, Cursor, Reader};
use crate::record::Stream;
use crate::segment::{self, list_segments, segment_path, validate_process_id};
use crate::writer::StreamWriter;

/// A stream of a process: the unit that has segments, one writer and
/// consumers.
pub(crate) type Key = (String, Stream);

#[derive(Debug)]
pub(crate) struct SegInfo {
    pub(crate) size: u64,
    /// Global creation order, for "oldest first" across streams.
    birth: u64,
}

#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) segments: BTreeMap<u64, SegInfo>,
    /// The segment a live writer appends to; never deleted.
    pub(crate) current: Option<u64>,
    pub(crate) next_seq: u64,
    pub(crate) has_writer: bool,
    consumers: HashMap<u64, Cursor>,
    pub(crate) data_tx: watch::Sender<u64>,
}

impl StreamState {
    fn new(next_seq: u64) -> Self {
        StreamState {
            segments: BTreeMap::new(),
            current: None,
            next_seq,
            has_writer: false,
            consumers: HashMap::new(),
            data_tx: watch::Sender::new(0),
        }
    }

    /// Whether every registered consumer has read all of segment `seq` and
    /// no writer appends to it any more. With no consumer registered, every
    /// finished segment counts as read (the journal is then a rotating log).
    fn consumed(&self, seq: u64, size: u64) -> bool {
        self.current != Some(seq) && self.read_by_all(seq, size)
    }

    /// Whether every registered consumer has read segment `seq` (of `size`
    /// bytes) to its end, whether a writer still appends to it or not.
    pub(crate) fn read_by_all(&self, seq: u64, size: u64) -> bool {
        self.consumers
            .values()
            .all(|c| c.segment > seq || (c.segment == seq && c.offset >= size))
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) streams: HashMap<Key, StreamState>,
    /// Bytes in segment files plus bytes reserved by appends in flight.
    pub(crate) used: u64,
    births: u64,
    next_consumer: u64,
    pub(crate) dropped_total: u64,
    /// Inside an episode of the filesystem being full (warned once).
    pub(crate) fs_full: bool,
}

impl State {
    pub(crate) fn stream(&mut self, key: &Key) -> &mut StreamState {
        self.streams
            .entry(key.clone())
            .or_insert_with(|| StreamState::new(1))
    }

    pub(crate) fn add_segment(&mut self, key: &Key, seq: u64) {
        self.births += 1;
        let birth = self.births;
        let ss = self.stream(key);
        ss.segments.insert(seq, SegInfo { size: 0, birth });
        ss.current = Some(seq);
        ss.next_seq = ss.next_seq.max(seq + 1);
    }
}

/// State shared by a journal's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: JournalConfig,
    state: Mutex<State>,
    /// Bumped whenever space may have been freed.
    pub(crate) space_tx: watch::Sender<u64>,
    /// fsyncs and deletions in flight on the blocking pool.
    pub(crate) jobs: Arc<Jobs>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters;
        // the journal keeps working rather than propagating the poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_space(&self) {
        self.space_tx.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Reserves as much of `need` bytes of the budget as fits, deleting
    /// consumed segments (oldest first, across all streams) until all of it
    /// fits or none is left to delete; the bytes granted (`0..=need`).
    pub(crate) fn reserve_up_to(&self, st: &mut State, need: u64) -> u64 {
        while st.used.saturating_add(need) > self.config.budget_bytes {
            if !self.delete_oldest_consumed(st) {
                break;
            }
        }
        let granted = need.min(self.config.budget_bytes.saturating_sub(st.used));
        st.used += granted;
        granted
    }

    fn delete_oldest_consumed(&self, st: &mut State) -> bool {
        let mut oldest: Option<(u64, Key, u64)> = None;
        for (key, ss) in &st.streams {
            // Segments of a stream are consumed oldest first: only its oldest
            // can be the next to go.
            if let Some((&seq, info)) = ss.segments.iter().next() {
                let older = match &oldest {
                    Some(o) => info.birth < o.0,
                    None => true,
                };
                if older && ss.consumed(seq, info.size) {
                    oldest = Some((info.birth, key.clone(), seq));
                }
            }
        }
        match oldest {
            Some((_, key, seq)) => {
                self.delete_segment(st, &key, seq, "budget");
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete_segment(&self, st: &mut State, key: &Key, seq: u64, why: &'static str) {
        let Some(ss) = st.streams.get_mut(key) else {
            return;
        };
        let Some(info) = ss.segments.remove(&seq) else {
            return;
        };
        let path = segment_path(&self.config.dir, &key.0, key.1, seq);
        let size = info.size;
        // The budget counts it gone now; the filesystem gets the blocks back
        // once the unlink (slow while its pages are in the page cache) ran.
        let space_tx = self.space_tx.clone();
        background::run(&self.jobs, move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), size, why, "deleted journal segment")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Forgotten anyway: a segment that cannot be deleted must not
                // make every later append retry the deletion.
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot delete journal segment")
                }
            }
            space_tx.send_modify(|g| *g = g.wrapping_add(1));
        });
        st.used = st.used.saturating_sub(size);
        self.notify_space();
    }

    /// Deletes the oldest read segments of `key` beyond `max_segments`.
    pub(crate) fn prune_retained(&self, st: &mut State, key: &Key) {
        let Some(ss) = st.streams.get(key) else {
            return;
        };
        let consumed: Vec<u64> = ss
            .segments
            .iter()
            .filter(|(&seq, info)| ss.consumed(seq, info.size))
            .map(|(&seq, _)| seq)
            .collect();
        let keep = self.config.max_segments as usize;
        if consumed.len() > keep {
            for seq in &consumed[..consumed.len() - keep] {
                self.delete_segment(st, key, *seq, "retention");
            }
        }
    }

    pub(crate) fn register_consumer(&self, key: &Key, at: Cursor) -> u64 {
        let mut st = self.lock();
        st.next_consumer += 1;
        let id = st.next_consumer;
        st.stream(key).consumers.insert(id, at);
        id
    }

    pub(crate) fn commit(&self, key: &Key, id: u64, at: Cursor) {
        let mut st = self.lock();
        let ss = st.stream(key);
        let Some(c) = ss.consumers.get_mut(&id) else {
            return;
        };
        let moved_segment = at.segment > c.segment;
        if at > *c {
            *c = at;
        }
        if moved_segment {
            self.prune_retained(&mut st, key);
            self.notify_space();
        }
    }

    pub(crate) fn unregister_consumer(&self, key: &Key, id: u64) {
        let mut st = self.lock();
        if let Some(ss) = st.streams.get_mut(key) {
            ss.consumers.remove(&id);
        }
        self.prune_retained(&mut st, key);
        self.notify_space();
    }
}

/// One task's log journal: a folder with one sub-folder per process, holding
/// each stream's segment files. Cheap to clone; all clones share the budget.
///
/// See the crate documentation for the layout, the budget and durability.
#[derive(Debug, Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// Opens (creating it if needed) the journal in `config.dir`. An existing
    /// journal is continued: each stream's next segment comes after its last
    /// one, whose torn last record (from a crash mid-write), if any, is cut.
    pub fn open(config: JournalConfig) -> Result<Journal> {
        check_config(&config)?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io("create folder", &dir, e))?;
        // Container output may hold secrets: the task's folder is not for
        // other users.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .map_err(|e| JournalError::io("set permissions of", &dir, e))?;
        let mut found: Vec<(SystemTime, Key, u64, u64)> = Vec::new();
        let mut next_seqs: HashMap<Key, u64> = HashMap::new();
        let rd = std::fs::read_dir(&dir).map_err(|e| JournalError::io("read folder", &dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| JournalError::io("read folder", &dir, e))?;
            let Some(process) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_process_id(&process).is_err() || !entry.path().is_dir() {
                continue;
            }
            for stream in Stream::ALL {
                let segs = list_segments(&dir, &process, stream)?;
                let key = (process.clone(), stream);
                let last = segs.last().map(|s| s.0);
                for (seq, mut size) in segs {
                    let path = segment_path(&dir, &process, stream, seq);
                    if Some(seq) == last {
                        size = segment::repair_tail(&path)?;
                    }
                    let mtime = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((mtime, key.clone(), seq, size));
                }
                if let Some(last) = last {
                    next_seqs.insert(key, last + 1);
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut st = State {
            streams: HashMap::new(),
            used: 0,
            births: 0,
            next_consumer: 0,
            dropped_total: 0,
            fs_full: false,
        };
        for (key, next) in next_seqs {
            st.streams.insert(key, StreamState::new(next));
        }
        for (_, key, seq, size) in found {
            st.add_segment(&key, seq);
            let ss = st.stream(&key);
            ss.current = None;
            if let Some(info) = ss.segments.get_mut(&seq) {
                info.size = size;
            }
            st.used += size;
        }
        tracing::debug!(dir = %dir.display(), used = st.used, "opened journal");
        Ok(Journal {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(st),
                space_tx: watch::Sender::new(0),
                jobs: Arc::new(Jobs::default()),
            }),
        })
    }

    /// Waits (up to `timeout`) until the fsyncs and segment deletions this
    /// journal started in the background finished, e.g. before removing its
    /// folder. `true` when none is left.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        self.shared.jobs.wait_idle(timeout)
    }

    /// The journal's configuration.
    pub fn config(&self) -> &JournalConfig {
        &self.shared.config
    }

    /// The journal's folder.
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// The writer of `process`'s `stream`; one at a time per stream
    /// ([`JournalError::WriterBusy`] otherwise). Its first append starts a
    /// new segment after the stream's last one.
    pub fn writer(&self, process: &str, stream: Stream) -> Result<StreamWriter> {
        validate_process_id(process)?;
        let key = (process.to_owned(), stream);
        {
            let mut st = self.shared.lock();
            let ss = st.stream(&key);
            if ss.has_writer {
                return Err(JournalError::WriterBusy {
                    process: process.to_owned(),
                    stream,
                });
            }
            ss.has_writer = true;
        }
        Ok(StreamWriter::new(Arc::clone(&self.shared), key))
    }

    /// A reader of `process`'s `stream` from `from` ([`Cursor::START`]: the
    /// oldest segment), woken by this journal's writer when it appends.
    /// It does not hold back deletion; use [`Journal::consumer`] for that.
    pub fn reader(&self, process: &str, stream: Stream, from: Cursor) -> Result<Reader> {
        validate_process_id(process)?;
        let rx = self
            .shared
            .lock()
            .stream(&(process.to_owned(), stream))
            .data_tx
            .subscribe();
        let mut r = Reader::open_at(self.dir(), process, stream, from)?;
        r.attach(rx, Arc::clone(&self.shared), (process.to_owned(), stream));
        Ok(r)
    }

    /// Registers a consumer of `process`'s `stream` reading from the oldest
    /// segment: until it has read a segment (and committed past it), that
    /// segment is never deleted.
    pub fn consumer(&self, process: &str, stream: Stream) -> Result<Consumer> {
        self.consumer_at(process, stream, Cursor::START)
    }

    /// Like [`Journal::consumer`], from `from` (e.g. a cursor saved earlier).
    pub fn consumer_at(&self, process: &str, stream: Stream, from: Cursor) -> Result<Consumer> {
        let reader = self.reader(process, stream, from)?;
        let key = (process.to_owned(), stream);
        let id = self.shared.register_consumer(&key, from);
        Ok(Consumer::new(
            Arc::clone(&self.shared),
            key,
            id,
            reader,
            from,
        ))
    }

    /// Where what `process`'s `stream` gets next will start: a consumer
    /// from here ([`Journal::consumer_at`]) reads only what is appended from
    /// now on, without a gap. E.g. a task restored from a checkpoint, whose
    /// earlier output its earlier sinks already got. [`Cursor::START`] when
    /// the stream has nothing yet.
    pub fn end(&self, process: &str, stream: Stream) -> Result<Cursor> {
        validate_process_id(process)?;
        let st = self.shared.lock();
        let Some(ss) = st.streams.get(&(process.to_owned(), stream)) else {
            return Ok(Cursor::START);
        };
        Ok(match ss.current {
            // A writer appends to this segment: after its last byte.
            Some(seq) => Cursor {
                segment: seq,
                offset: ss.segments.get(&seq).map_or(0, |s| s.size),
            },
            // The next writer starts this segment.
            None => Cursor {
                segment: ss.next_seq,
                offset: 0,
            },
        })
    }

    /// Bytes the task's segment files take (plus appends in flight).
    pub fn used_bytes(&self) -> u64 {
        self.shared.lock().used
    }

    /// Bytes dropped by the `drop` policy since the journal was opened, all
    /// streams together.
    pub fn dropped_bytes(&self) -> u64 {
        self.shared.lock().dropped_total
    }

    /// Waits until space may have been freed in the budget (a consumer
    /// advanced past a segment, a consumer went away, a segment was
    /// deleted), or at most `max_wait`. To not miss a wake-up, prefer
    /// [`StreamWriter::wait_for_space`] after an append returned
    /// [`crate::Appended::Full`].
    pub async fn space_freed(&self, max_wait: std::time::Duration) {
        let mut rx = self.shared.space_tx.subscribe();
        let _ = tokio::time::timeout(max_wait, rx.changed()).await;
    }
}

fn check_config(c: &JournalConfig) -> Result<()> {
    let invalid = |key, reason: String| Err(JournalError::InvalidOption { key, reason });
    if c.segment_bytes < MIN_SEGMENT_BYTES {
        return invalid(
            "segment_bytes",
            format!(
                "{} is below the minimum of {MIN_SEGMENT_BYTES}",
                c.segment_bytes
            ),
        );
    }
    if c.segment_bytes.saturating_mul(2) > c.budget_bytes {
        return invalid(
            "budget_bytes",
            format!(
                "{} must be at least twice segment_bytes ({})",
                c.budget_bytes, c.segment_bytes
            ),
        );
    }
    if c.max_record_bytes == 0 || (c.max_record_bytes as u64).saturating_add(64) > c.segment_bytes {
        return invalid(
            "max_record_bytes",
            format!(
                "{} must be above 0 and fit in a segment ({})",
                c.max_record_bytes, c.segment_bytes
            ),
        );
    }
    Ok(())
}

/// The process folders of the journal in `dir` (processes that have logged).
pub fn processes(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(JournalError::io("read folder", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io("read folder", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            if validate_process_id(name).is_ok() && entry.path().is_dir() {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}
