//! holdfast's log journal: what a container writes to stdout and stderr,
//! kept on disk so that it is never lost while a reader is away and the
//! container never blocks on a reader.
//!
//! # Layout
//!
//! One folder per task (by default `/var/lib/holdfast/logs/<namespace>/<id>/`;
//! this crate just takes a folder), one sub-folder per process (`init` or an
//! exec id), and per stream a series of append-only segment files:
//!
//! ```text
//! <task>/init/stdout.0000000001.log
//! <task>/init/stdout.0000000002.log
//! <task>/init/stderr.0000000001.log
//! <task>/exec-1/stdout.0000000001.log
//! ```
//!
//! Each line of a segment is one record in the Kubernetes CRI log format,
//! `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <text>\n` (see
//! [`record`]). The writer stamps records with nine fraction digits, e.g.
//! `2024-05-01T12:00:00.123456789Z stdout F hello`.
//!
//! # Writing
//!
//! [`Journal::writer`] gives a [`StreamWriter`] per process stream.
//! [`StreamWriter::append`] turns the bytes read from the container into
//! records (complete lines are `F`, the rest of the append `P`, long text is
//! cut into `P` records of at most `max_record_bytes`) and writes them with
//! one `write(2)` (per segment touched). A segment is closed when the next
//! append would take it past `segment_bytes`; the next one gets the next
//! sequence number. Re-opening a journal continues after the last segment.
//!
//! # Budget
//!
//! All segment files of a task together may hold at most `budget_bytes`
//! (file sizes: the record bytes, timestamps included). An append is
//! accounted before anything is written. If it does not fit,
//! segments that every registered [`Consumer`] has read and that no writer
//! appends to are deleted, oldest first across the task, until it does
//! (with no consumer registered, every finished segment counts as read:
//! the journal then behaves like kubelet's rotating log). If it still does
//! not fit, the records that fit are written and the [`FullPolicy`] applies
//! to the rest:
//!
//! - `block`: [`Appended::Full`]; the caller stops reading the container's
//!   pipe and waits ([`StreamWriter::wait_for_space`]) until a consumer
//!   advanced, then appends the rest again. Nothing is lost.
//! - `drop`: [`Appended::Dropped`]; the bytes are counted
//!   ([`StreamWriter::dropped_bytes`], [`Journal::dropped_bytes`]) and one
//!   `F` record `holdfast: dropped N bytes (log budget full)` is written
//!   before the stream's next successful append (or by
//!   [`StreamWriter::sync_if_due`] / [`StreamWriter::close`] when it fits).
//!
//! A full filesystem (`ENOSPC`, `EDQUOT`) is treated like a full budget,
//! with one warning per episode. Blocks are claimed with `fallocate` before
//! writing (up to 1 MiB ahead, given back when the segment is finished),
//! and a write that fails anyway is cut back to the last record
//! boundary, so a failed append leaves no partial record behind.
//!
//! Besides, each stream keeps at most `max_segments` finished segments that
//! every consumer has read; older ones are deleted at rotation and commit.
//!
//! # Durability
//!
//! - Every append reaches the page cache before it returns (`write(2)`): a
//!   crash of the shim or of containerd loses nothing that was appended.
//! - What was appended (the current segment, the segments finished since
//!   the last fsync, the folder entries of new segments) is fsynced by
//!   [`StreamWriter::sync_if_due`] once `fsync_interval` (default 1 s) has
//!   passed since the last fsync, by [`StreamWriter::close`], and by
//!   [`StreamWriter::sync`]. Only a host crash (power loss, kernel panic)
//!   can lose data: at most the last `fsync_interval` of output when the
//!   caller calls `sync_if_due` at that interval. Rotation does not fsync:
//!   one fsync per interval, not one per segment.
//! - Inside a tokio runtime, those fsyncs (but [`StreamWriter::sync`]'s) and
//!   the deletion of segments run on the blocking pool, so that a slow disk
//!   never stalls an append (an fsync, or an unlink of a file whose pages are
//!   still cached, takes tens of milliseconds); [`Journal::wait_idle`] waits
//!   for them.
//! - After a host crash the last record may be torn; [`Journal::open`] cuts
//!   it off.
//!
//! # Reading
//!
//! A [`Reader`] reads one stream from a [`Cursor`] (segment, offset) and
//! follows it across rotations like `tail -F`; it needs only the files, so
//! another process (the manager) can use [`Reader::open`]. A [`Consumer`]
//! ([`Journal::consumer`]) is a reader whose committed cursor holds back
//! deletion; a forwarder loops `next().await` → write to the sink →
//! `commit(cursor)`.
//!
//! To start near the end without reading everything, [`LineStarts`] walks a
//! stream's line starts backwards from its newest segment (`tail -n`), and
//! [`since_start`] finds the segment to read from for output since a time.
#![deny(unsafe_code)]

mod background;
pub mod config;
pub mod error;
mod journal;
mod reader;
pub mod record;
mod segment;
mod tail;
mod writer;

pub use config::{ByteSize, FullPolicy, JournalConfig, JournalOptions};
pub use error::{JournalError, ParseError, Result};
pub use journal::{processes, Journal};
pub use reader::{Consumer, Cursor, Entry, RawRead, Reader, POLL_INTERVAL};
pub use record::{parse_line, parse_line_raw, reconstruct, RawRecord, Record, Stream};
pub use segment::{segment_file_name, segment_path, validate_process_id, MAX_NAME_LEN};
pub use tail::{since_start, LineStart, LineStarts};
pub use writer::{Appended, FullCause, StreamWriter, SPACE_RETRY};

#[cfg(test)]
mod tests;
