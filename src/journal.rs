//! The mutation journal: every opt-out, consent change and erasure is appended and fsynced here
//! before it is acknowledged.
//!
//! Files are segments `journal/<first sequence number>.wal`. A segment starts with a 24-byte
//! header (magic, first sequence number, CRC32C of both); then records
//! `[length u32][crc32c u32][sequence u64][payload]`, the CRC covering sequence and payload.
//! One writer thread drains every append queued meanwhile, writes them with one `write`, calls
//! `sync_data` once and only then completes them (group commit). Compaction rotates to a new
//! segment and later drops whole segments it has made redundant.
//!
//! Replay reads every segment in order. A torn last record (a crash mid-write) is dropped with
//! a warning and truncated away; damage before the tail stops start-up with the file and
//! offset, unless repair is asked for, which truncates at the damage. Owns the file format and
//! the writer thread; knows nothing of what payloads mean.
//!
//! A failed group commit (ENOSPC, EIO on write or fsync) fails the appends of that group and
//! every append queued behind it (their sequence numbers are given out again), and marks the
//! segment dirty: before the writer writes, rotates or exits again it cuts the segment back to
//! the end of its last durable record and fsyncs that, so a partial or unconfirmed record never
//! stays in a segment that anything follows. Nothing is sticky: once the disk accepts writes
//! again the next append succeeds. A new segment is written under a temporary name and renamed
//! into place, so no segment file ever has a partial header.

use crate::metrics::JournalErrorKind;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

const MAGIC: &[u8; 8] = b"SUPJRNL1";
const SEGMENT_HEADER: u64 = 24;
const RECORD_HEADER: usize = 8;
/// Largest payload accepted (a bulk import is split into several records above this).
pub const MAX_PAYLOAD: usize = 16 << 20;
const EXTENSION: &str = "wal";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal {path}: damaged at offset {offset}: {reason} (start with --repair-journal to truncate there)"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{0}")]
    Failed(String),
    #[error("journal record of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What opening the journal found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<Record>,
    /// A torn final record that was dropped: (file, offset).
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Damage that repair truncated away: (file, offset, reason).
    pub repaired: Option<(PathBuf, u64, String)>,
}

type Completion = Box<dyn FnOnce(Result<u64, String>) + Send>;

enum Job {
    Append(Vec<u8>, u64, Completion),
    Rotate(Box<dyn FnOnce(Result<u64, String>) + Send>),
}

struct Queue {
    jobs: VecDeque<Job>,
    next_seq: u64,
    closed: bool,
    /// The writer is blocked on `wake`. Appends notify only then: a notify is a futex system
    /// call even with nobody waiting, and while the writer is busy writing or in fsync it will
    /// drain the queue anyway before it sleeps.
    writer_waiting: bool,
    /// The last group commit failed with this (cleared by the next durable group). Status only:
    /// appends are never refused for it, each is a retry.
    error: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    dir: PathBuf,
    stats: Mutex<Stats>,
}

/// Size and position of the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub segments: u64,
    pub last_seq: u64,
    pub appends: u64,
    pub syncs: u64,
}

/// The writer thread's file operations. [`OsIo`] calls the OS; tests implement it to fail a
/// write, fsync or truncation on the Nth call (a full disk, EIO), so the recovery is tested
/// everywhere, not only where a small filesystem can be mounted.
pub trait SegmentIo: Send + 'static {
    fn write_all(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn set_len(&mut self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The operating system's file operations.
pub struct OsIo;

impl SegmentIo for OsIo {}

/// An open journal with its writer thread.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// `first_seq` of every segment file in `dir`, sorted.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|e| e == EXTENSION)
            && let Some(first) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{EXTENSION}"))
}

fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut header = [0u8; SEGMENT_HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&header[..16]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    header
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Encodes one record.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&((payload.len() + 8) as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Outcome of scanning one segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every byte is good records.
    Clean,
    /// The last record is incomplete or fails its CRC and nothing follows it: a torn write.
    TornTail { offset: u64 },
    /// A bad record with more data after it.
    Damaged { offset: u64, reason: String },
}

/// Parses a segment's bytes (header included) into records; never panics.
pub fn scan_segment(bytes: &[u8], records: &mut Vec<Record>) -> (Option<u64>, Scan) {
    if bytes.len() < SEGMENT_HEADER as usize {
        return (None, Scan::TornTail { offset: 0 });
    }
    let header = &bytes[..SEGMENT_HEADER as usize];
    let first_seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32c::crc32c(&header[..16]) != crc || header[20..] != [0; 4] {
        return (
            None,
            Scan::Damaged {
                offset: 0,
                reason: "bad segment header".into(),
            },
        );
    }
    let mut offset = SEGMENT_HEADER as usize;
    let mut expected_seq = first_seq;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        // Zero padding after the last record (a preallocated or zero-filled tail) is a tail.
        if rest.iter().all(|&b| b == 0) {
            return (
                Some(first_seq),
                Scan::TornTail {
                    offset: offset as u64,
                },
            );
        }
        if rest.len() < RECORD_HEADER + 8 {
            return (
                Some(first_seq),
                Scan::TornTail {
                    offset: offset as u64,
                },
            );
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let bad = |reason: &str| {
            if offset + RECORD_HEADER + len >= bytes.len() || len > MAX_PAYLOAD + 8 {
                Scan::TornTail {
                    offset: offset as u64,
                }
            } else {
                Scan::Damaged {
                    offset: offset as u64,
                    reason: reason.into(),
                }
            }
        };
        if !(8..=MAX_PAYLOAD + 8).contains(&len) {
            let verdict = if rest.len() < RECORD_HEADER + 8 {
                Scan::TornTail {
                    offset: offset as u64,
                }
            } else {
                bad("impossible record length")
            };
            // A length that cannot be right with data after it is damage, not a torn tail.
            let verdict = match verdict {
                Scan::TornTail { .. }
                    if offset + RECORD_HEADER + 8 < bytes.len() && len > MAX_PAYLOAD + 8 =>
                {
                    Scan::Damaged {
                        offset: offset as u64,
                        reason: "impossible record length".into(),
                    }
                }
                other => other,
            };
            return (Some(first_seq), verdict);
        }
        if rest.len() < RECORD_HEADER + len {
            return (
                Some(first_seq),
                Scan::TornTail {
                    offset: offset as u64,
                },
            );
        }
        let body = &rest[RECORD_HEADER..RECORD_HEADER + len];
        if crc32c::crc32c(body) != crc {
            return (Some(first_seq), bad("record checksum mismatch"));
        }
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        if seq != expected_seq {
            return (
                Some(first_seq),
                Scan::Damaged {
                    offset: offset as u64,
                    reason: format!("sequence {seq} where {expected_seq} was expected"),
                },
            );
        }
        records.push(Record {
            seq,
            payload: body[8..].to_vec(),
        });
        expected_seq += 1;
        offset += RECORD_HEADER + len;
    }
    (Some(first_seq), Scan::Clean)
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, replays it, and starts the writer.
    pub fn open(dir: &Path, repair: bool) -> Result<(Journal, Replay), JournalError> {
        Journal::open_with_io(dir, repair, Box::new(OsIo))
    }

    /// [`Journal::open`] with the writer's file operations going through `io`.
    pub fn open_with_io(
        dir: &Path,
        repair: bool,
        io: Box<dyn SegmentIo>,
    ) -> Result<(Journal, Replay), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        remove_temporary_segments(dir)?;
        let mut replay = Replay::default();
        let found = segments(dir)?;
        let mut next_seq = 1u64;
        let mut last_path: Option<PathBuf> = None;
        let last_index = found.len().saturating_sub(1);
        for (index, (first, path)) in found.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_error(path))?;
            let before = replay.records.len();
            let (header_seq, scan) = scan_segment(&bytes, &mut replay.records);
            if header_seq.is_some_and(|s| s != *first) {
                return Err(JournalError::Damaged {
                    path: path.clone(),
                    offset: 8,
                    reason: "segment name and header disagree".into(),
                });
            }
            if replay.records.len() > before && replay.records[before].seq != next_seq && before > 0
            {
                return Err(JournalError::Damaged {
                    path: path.clone(),
                    offset: SEGMENT_HEADER,
                    reason: format!(
                        "segment starts at {} but {next_seq} was expected",
                        replay.records[before].seq
                    ),
                });
            }
            let is_last = index == last_index;
            match scan {
                Scan::Clean => {}
                Scan::TornTail { offset } if is_last => {
                    tracing::warn!(file = %path.display(), offset, "journal: dropping a torn last record (crash mid-write)");
                    truncate(
                        path,
                        offset.max(SEGMENT_HEADER),
                        header_seq.is_none().then_some(*first),
                    )?;
                    replay.torn_tail = Some((path.clone(), offset));
                }
                Scan::TornTail { offset } | Scan::Damaged { offset, .. } if !repair => {
                    let reason = match scan {
                        Scan::Damaged { reason, .. } => reason,
                        _ => "incomplete record before the last segment".into(),
                    };
                    return Err(JournalError::Damaged {
                        path: path.clone(),
                        offset,
                        reason,
                    });
                }
                Scan::TornTail { offset } | Scan::Damaged { offset, .. } => {
                    tracing::warn!(file = %path.display(), offset, "journal: repair truncates damaged records and everything after them");
                    truncate(
                        path,
                        offset.max(SEGMENT_HEADER),
                        header_seq.is_none().then_some(*first),
                    )?;
                    for (_, later) in &found[index + 1..] {
                        std::fs::remove_file(later).map_err(io_error(later))?;
                    }
                    sync_dir(dir)?;
                    replay.repaired = Some((path.clone(), offset, "truncated".into()));
                    next_seq = replay.records.last().map_or(*first, |r| r.seq + 1);
                    last_path = Some(path.clone());
                    break;
                }
            }
            next_seq = replay
                .records
                .last()
                .map_or(*first, |r| r.seq + 1)
                .max(*first);
            last_path = Some(path.clone());
        }
        let path = match last_path {
            Some(path) => path,
            None => {
                let path = segment_path(dir, next_seq);
                let mut file = File::create(&path).map_err(io_error(&path))?;
                file.write_all(&segment_header(next_seq))
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path))?;
                sync_dir(dir)?;
                path
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let durable_len = file.metadata().map_err(io_error(&path))?.len();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                next_seq,
                closed: false,
                writer_waiting: false,
                error: None,
            }),
            wake: Condvar::new(),
            dir: dir.to_owned(),
            stats: Mutex::new(Stats {
                last_seq: next_seq - 1,
                ..Stats::default()
            }),
        });
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                Writer {
                    shared: writer_shared,
                    io,
                    file,
                    path,
                    next_to_write: next_seq,
                    durable_len,
                    dirty: false,
                    dir_unsynced: false,
                    failing: false,
                }
                .run()
            })
            .map_err(io_error(dir))?;
        let journal = Journal {
            shared,
            writer: Some(writer),
        };
        journal.refresh_stats();
        Ok((journal, replay))
    }

    /// Queues a payload; `done` runs on the writer thread once it is durable (with its sequence
    /// number) or failed. Sequence numbers follow call order, and so do completions; a rotation
    /// queued after this append returns only after `done` has run (callers rely on that to
    /// finish work on durable records before a rotation's boundary is used). Keep `done` short:
    /// the next group commit waits for it. Returns the sequence number the record will carry
    /// once durable, or `None` when it was refused at once (`done` has then already run with
    /// the error).
    pub fn append(&self, payload: Vec<u8>, done: Completion) -> Option<u64> {
        if payload.len() > MAX_PAYLOAD {
            done(Err(JournalError::TooLarge(payload.len()).to_string()));
            return None;
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.jobs.push_back(Job::Append(payload, seq, done));
        let waiting = queue.writer_waiting;
        drop(queue);
        if waiting {
            self.shared.wake.notify_one();
        }
        Some(seq)
    }

    /// Appends and waits until durable.
    pub fn append_blocking(&self, payload: Vec<u8>) -> Result<u64, JournalError> {
        let (send, receive) = std::sync::mpsc::channel();
        let _ = self.append(
            payload,
            Box::new(move |result| {
                let _ = send.send(result);
            }),
        );
        receive
            .recv()
            .map_err(|_| JournalError::Failed("writer stopped".into()))?
            .map_err(JournalError::Failed)
    }

    /// Appends every payload (one group commit) and waits until they are durable; returns the
    /// last one's sequence number (`None` for no payloads). All or none: they are queued under
    /// one lock, so the writer takes them in one group, and a failure fails all of them (never
    /// a durable suffix after a failed prefix, which would make a reader of the last record
    /// believe the earlier ones are there).
    pub fn append_all_blocking(&self, payloads: Vec<Vec<u8>>) -> Result<Option<u64>, JournalError> {
        let count = payloads.len();
        if count == 0 {
            return Ok(None);
        }
        if let Some(large) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(JournalError::TooLarge(large.len()));
        }
        let (send, receive) = std::sync::mpsc::channel();
        let waiting = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for (index, payload) in payloads.into_iter().enumerate() {
                let seq = queue.next_seq;
                queue.next_seq += 1;
                // The group succeeds or fails as one, so the last record's outcome is the group's.
                let done: Completion = if index + 1 < count {
                    Box::new(|_| {})
                } else {
                    let send = send.clone();
                    Box::new(move |result| {
                        let _ = send.send(result);
                    })
                };
                queue.jobs.push_back(Job::Append(payload, seq, done));
            }
            queue.writer_waiting
        };
        drop(send);
        if waiting {
            self.shared.wake.notify_one();
        }
        receive
            .recv()
            .map_err(|_| JournalError::Failed("writer stopped".into()))?
            .map(Some)
            .map_err(JournalError::Failed)
    }

    /// Starts a new segment; returns the sequence number of the last record in older segments.
    pub fn rotate_blocking(&self) -> Result<u64, JournalError> {
        let (send, receive) = std::sync::mpsc::channel();
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.jobs.push_back(Job::Rotate(Box::new(move |result| {
                let _ = send.send(result);
            })));
        }
        self.shared.wake.notify_one();
        let result = receive
            .recv()
            .map_err(|_| JournalError::Failed("writer stopped".into()))?
            .map_err(JournalError::Failed);
        self.refresh_stats();
        result
    }

    /// Deletes every segment whose records all have sequence numbers ≤ `through` (never the
    /// segment being written). Returns how many were deleted.
    pub fn drop_through(&self, through: u64) -> Result<usize, JournalError> {
        let found = segments(&self.shared.dir)?;
        let mut dropped = 0;
        for window in found.windows(2) {
            let (_, path) = &window[0];
            let (next_first, _) = window[1];
            if next_first <= through + 1 {
                std::fs::remove_file(path).map_err(io_error(path))?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            sync_dir(&self.shared.dir)?;
        }
        self.refresh_stats();
        Ok(dropped)
    }

    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the last group commit failed, while no later one has succeeded.
    pub fn error(&self) -> Option<String> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .clone()
    }

    fn refresh_stats(&self) {
        let (bytes, count) = segments(&self.shared.dir)
            .map(|found| {
                let bytes = found
                    .iter()
                    .filter_map(|(_, p)| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                (bytes, found.len() as u64)
            })
            .unwrap_or((0, 0));
        let mut stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.bytes = bytes;
        stats.segments = count;
    }

    /// The file and offset of record `seq`, for error messages about a payload the journal
    /// itself found well-formed (it is checksummed, but its contents may still be refused).
    pub fn locate(&self, seq: u64) -> Option<(PathBuf, u64)> {
        let found = segments(&self.shared.dir).ok()?;
        let (_, path) = found.iter().rev().find(|(first, _)| *first <= seq)?;
        let bytes = std::fs::read(path).ok()?;
        let mut offset = SEGMENT_HEADER as usize;
        while offset + RECORD_HEADER + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().ok()?) as usize;
            let at = offset + RECORD_HEADER;
            if len < 8 || at + len > bytes.len() {
                return None;
            }
            if u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?) == seq {
                return Some((path.clone(), offset as u64));
            }
            offset = at + len;
        }
        None
    }

    /// Every segment file, oldest first (for tests and the erasure audit).
    pub fn files(&self) -> Vec<PathBuf> {
        segments(&self.shared.dir)
            .map(|f| f.into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn truncate(path: &Path, len: u64, rewrite_header: Option<u64>) -> Result<(), JournalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    if let Some(first) = rewrite_header {
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        file.write_all(&segment_header(first))
            .map_err(io_error(path))?;
    }
    file.sync_all().map_err(io_error(path))
}

/// Deletes `*.wal.tmp` files: segments whose creation did not finish (never renamed into place,
/// so they hold no record).
fn remove_temporary_segments(dir: &Path) -> Result<(), JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.to_str().is_some_and(|p| p.ends_with(".wal.tmp")) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// A failed file operation of the writer: its kind (for the metric) and a message naming the
/// file.
type Failure = (JournalErrorKind, String);

fn failure(path: &Path, what: &str, fsync: bool, error: &io::Error) -> Failure {
    let kind = if matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        JournalErrorKind::NoSpace
    } else if fsync {
        JournalErrorKind::Fsync
    } else {
        JournalErrorKind::Io
    };
    crate::metrics::metrics().journal_errors[kind as usize].increment(1);
    (kind, format!("journal {}: {what}: {error}", path.display()))
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    io: Box<dyn SegmentIo>,
    file: File,
    path: PathBuf,
    /// The sequence number of the next record this thread writes. A new segment is named after
    /// it, not after the queue's next number: appends queued after this round was drained (they
    /// already hold their numbers) are written next, into the new segment.
    next_to_write: u64,
    /// Length of `file` through its last durable record.
    durable_len: u64,
    /// `file` may hold bytes past `durable_len` (a group whose write or fsync failed): cut them
    /// away before writing, rotating or exiting.
    dirty: bool,
    /// A new segment was renamed into place but the directory fsync failed: sync the directory
    /// before acknowledging a record in it.
    dir_unsynced: bool,
    /// The last group failed (the queue's `error` is set).
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        let mut buffer = Vec::with_capacity(1 << 20);
        let mut done: Vec<(u64, Completion)> = Vec::new();
        // Swapped with the queue's each round, so neither side allocates once both have grown.
        let mut jobs: VecDeque<Job> = VecDeque::new();
        loop {
            {
                let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                while queue.jobs.is_empty() && !queue.closed {
                    queue.writer_waiting = true;
                    queue = self
                        .shared
                        .wake
                        .wait(queue)
                        .unwrap_or_else(|e| e.into_inner());
                    queue.writer_waiting = false;
                }
                if queue.jobs.is_empty() && queue.closed {
                    break;
                }
                std::mem::swap(&mut queue.jobs, &mut jobs);
            }
            buffer.clear();
            let mut rotations = Vec::new();
            let mut last_seq = None;
            for job in jobs.drain(..) {
                match job {
                    Job::Append(payload, seq, completion) => {
                        encode_record(seq, &payload, &mut buffer);
                        done.push((seq, completion));
                        last_seq = Some(seq);
                    }
                    Job::Rotate(completion) => rotations.push(completion),
                }
            }
            let started = std::time::Instant::now();
            match self.commit(&buffer) {
                Ok(()) => {
                    if !buffer.is_empty() {
                        let metrics = crate::metrics::metrics();
                        metrics
                            .journal_fsync
                            .record(started.elapsed().as_secs_f64());
                        metrics.journal_appends.increment(done.len() as u64);
                        metrics.journal_bytes_written.increment(buffer.len() as u64);
                        let mut stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                        stats.appends += done.len() as u64;
                        stats.syncs += 1;
                        stats.bytes += buffer.len() as u64;
                        if let Some(seq) = last_seq {
                            stats.last_seq = seq;
                        }
                    }
                    if let Some(seq) = last_seq {
                        self.next_to_write = seq + 1;
                        if self.failing {
                            self.failing = false;
                            self.shared
                                .queue
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .error = None;
                            tracing::info!(file = %self.path.display(), "journal writes succeed again");
                        }
                    }
                    for (seq, completion) in done.drain(..) {
                        completion(Ok(seq));
                    }
                }
                Err((kind, message)) => self.fail_queued(kind, message, &mut done),
            }
            for completion in rotations {
                completion(self.rotate().map_err(|(_, message)| message));
            }
        }
        // Leave no unconfirmed bytes behind for the next start (it would drop a torn tail
        // anyway, but a whole unacknowledged record would be replayed).
        let _ = self.repair();
    }

    /// Fails the group that could not be made durable and every append queued behind it: their
    /// sequence numbers follow the failed group's, which are given out again, so none of them
    /// may be written. Rotations stay queued.
    fn fail_queued(
        &mut self,
        kind: JournalErrorKind,
        message: String,
        done: &mut Vec<(u64, Completion)>,
    ) {
        // Logged once per outage (each retry may fail again; the metric counts every one).
        if self.failing {
            tracing::debug!(%message, kind = kind.name(), "journal write failed again");
        } else {
            tracing::error!(%message, kind = kind.name(), "journal write failed; the mutations of this group are refused and the next append retries");
        }
        self.failing = true;
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.error = Some(message.clone());
            let mut kept = VecDeque::new();
            for job in queue.jobs.drain(..) {
                match job {
                    Job::Append(_, seq, completion) => done.push((seq, completion)),
                    rotation @ Job::Rotate(_) => kept.push_back(rotation),
                }
            }
            queue.jobs = kept;
            queue.next_seq = self.next_to_write;
        }
        // Outside the lock: a completion may append again.
        for (_, completion) in done.drain(..) {
            completion(Err(message.clone()));
        }
    }

    /// Writes and fsyncs one group; on success `durable_len` covers it.
    fn commit(&mut self, buffer: &[u8]) -> Result<(), Failure> {
        self.repair()?;
        if buffer.is_empty() {
            return Ok(());
        }
        if self.dir_unsynced {
            let dir = self.shared.dir.clone();
            self.io
                .sync_dir(&dir)
                .map_err(|e| failure(&dir, "directory fsync", true, &e))?;
            self.dir_unsynced = false;
        }
        // From the first byte written until the fsync returns, the tail is unconfirmed.
        self.dirty = true;
        self.io
            .write_all(&mut self.file, buffer)
            .map_err(|e| failure(&self.path, "write", false, &e))?;
        self.io
            .sync_data(&self.file)
            .map_err(|e| failure(&self.path, "fsync", true, &e))?;
        self.durable_len += buffer.len() as u64;
        self.dirty = false;
        Ok(())
    }

    /// Cuts a dirty segment back to its last durable record and makes the cut durable. After a
    /// failed fsync the page cache may hold bytes the disk does not (or mark them clean though
    /// they were lost), so those bytes are never trusted: only what an fsync confirmed stays.
    fn repair(&mut self) -> Result<(), Failure> {
        if !self.dirty {
            return Ok(());
        }
        self.io
            .set_len(&self.file, self.durable_len)
            .map_err(|e| failure(&self.path, "truncating a failed write", false, &e))?;
        self.io
            .sync_data(&self.file)
            .map_err(|e| failure(&self.path, "fsync after truncating", true, &e))?;
        self.file
            .seek(SeekFrom::Start(self.durable_len))
            .map_err(|e| failure(&self.path, "seek", false, &e))?;
        self.dirty = false;
        tracing::info!(file = %self.path.display(), length = self.durable_len, "journal segment cut back to its last durable record");
        Ok(())
    }

    /// Starts a new segment; returns the sequence number of the last record in older segments.
    /// Never past unconfirmed bytes: a dirty segment is repaired first or the rotation fails.
    fn rotate(&mut self) -> Result<u64, Failure> {
        self.repair()?;
        let next_seq = self.next_to_write;
        let new_path = segment_path(&self.shared.dir, next_seq);
        if new_path == self.path {
            // Nothing written since the last rotation; finish it if its directory fsync failed.
            if self.dir_unsynced {
                let dir = self.shared.dir.clone();
                self.io
                    .sync_dir(&dir)
                    .map_err(|e| failure(&dir, "directory fsync", true, &e))?;
                self.dir_unsynced = false;
            }
            return Ok(next_seq - 1);
        }
        // Written under a temporary name: a segment file never has a partial header.
        let temporary = new_path.with_extension("wal.tmp");
        let created = (|| -> Result<File, Failure> {
            let mut file =
                File::create(&temporary).map_err(|e| failure(&temporary, "create", false, &e))?;
            self.io
                .write_all(&mut file, &segment_header(next_seq))
                .map_err(|e| failure(&temporary, "write", false, &e))?;
            self.io
                .sync_data(&file)
                .map_err(|e| failure(&temporary, "fsync", true, &e))?;
            std::fs::rename(&temporary, &new_path)
                .map_err(|e| failure(&new_path, "rename", false, &e))?;
            Ok(file)
        })();
        let file = match created {
            Ok(file) => file,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(error);
            }
        };
        // The new segment is in place: write there from now on, even if the directory fsync
        // fails (then it is retried before any record in the new segment is acknowledged).
        self.file = file;
        self.path = new_path;
        self.durable_len = SEGMENT_HEADER;
        let dir = self.shared.dir.clone();
        if let Err(e) = self.io.sync_dir(&dir) {
            self.dir_unsynced = true;
            return Err(failure(&dir, "directory fsync", true, &e));
        }
        self.dir_unsynced = false;
        Ok(next_seq - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(journal: &Journal, count: u64) -> Vec<u64> {
        (0..count)
            .map(|i| {
                journal
                    .append_blocking(format!("mutation {i}").into_bytes())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn appends_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, replay) = Journal::open(dir.path(), false).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(payloads(&journal, 10), (1..=10).collect::<Vec<_>>());
        drop(journal);
        let (journal, replay) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(replay.records.len(), 10);
        assert_eq!(replay.records[3].payload, b"mutation 3");
        assert_eq!(journal.append_blocking(b"next".to_vec()).unwrap(), 11);
    }

    #[test]
    fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), false).unwrap();
        let journal = Arc::new(journal);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        journal
                            .append_blocking(format!("{t}-{i}").into_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stats = journal.stats();
        assert_eq!(stats.appends, 400);
        assert!(stats.syncs < 400, "no group commit: {stats:?}");
    }

    #[test]
    fn torn_tail_is_dropped_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), false).unwrap();
        payloads(&journal, 5);
        let file = journal.files()[0].clone();
        drop(journal);
        let full = std::fs::read(&file).unwrap();
        // Every cut inside the last record is a torn tail: 4 records survive.
        let last_record = full.len() - (RECORD_HEADER + 8 + b"mutation 4".len());
        for cut in last_record..full.len() {
            std::fs::write(&file, &full[..cut]).unwrap();
            let (journal, replay) = Journal::open(dir.path(), false).unwrap();
            assert_eq!(replay.records.len(), 4, "cut at {cut}");
            assert!(replay.torn_tail.is_some() || cut == last_record);
            drop(journal);
        }
        // A flipped byte in the second record, with records after it: damage.
        let mut damaged = full.clone();
        damaged[SEGMENT_HEADER as usize + 30] ^= 0x40;
        std::fs::write(&file, &damaged).unwrap();
        let error = Journal::open(dir.path(), false)
            .err()
            .expect("damage accepted");
        let message = error.to_string();
        assert!(
            message.contains(&file.display().to_string()) && message.contains("offset"),
            "{message}"
        );
        // Repair keeps what precedes the damage.
        let (_, replay) = Journal::open(dir.path(), true).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert!(replay.repaired.is_some());
    }

    #[test]
    fn rotation_and_dropping_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), false).unwrap();
        payloads(&journal, 3);
        assert_eq!(journal.rotate_blocking().unwrap(), 3);
        payloads(&journal, 2);
        assert_eq!(journal.files().len(), 2);
        assert_eq!(journal.drop_through(3).unwrap(), 1);
        assert_eq!(journal.files().len(), 1);
        drop(journal);
        let (journal, replay) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(
            replay.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(journal.append_blocking(vec![1]).unwrap(), 6);
    }

    #[test]
    fn rotation_while_appends_are_queued_keeps_segments_contiguous() {
        // Appends queued after the writer drained a round already hold their numbers; the new
        // segment must start at the first of them (it was once named after the queue's next
        // number, and the next open refused the journal as damaged).
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), false).unwrap();
        let journal = Arc::new(journal);
        let appenders: Vec<_> = (0..4)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for i in 0..150 {
                        journal
                            .append_blocking(format!("{t}-{i}").into_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut rotations = 0;
        while appenders.iter().any(|a| !a.is_finished()) && rotations < 200 {
            journal.rotate_blocking().unwrap();
            rotations += 1;
        }
        for appender in appenders {
            appender.join().unwrap();
        }
        drop(journal);
        let (_, replay) = Journal::open(dir.path(), false).expect("journal reopens");
        let seqs: Vec<u64> = replay.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
    }

    /// What the injected file operations do; shared between a test and its journal's writer.
    #[derive(Default)]
    struct Faults {
        /// The disk is full: a write stores part of its bytes, then fails with ENOSPC.
        full: bool,
        /// The write or fsync with this call number (from 1) fails with EIO (after a write has
        /// stored part of its bytes).
        fail_write_on: Option<u64>,
        fail_sync_on: Option<u64>,
        truncate_fails: bool,
        dir_sync_fails: bool,
        writes: u64,
        syncs: u64,
        /// Every operation fails with this chance in 1000 (xorshift state, chance).
        random: Option<(u64, u64)>,
    }

    impl Faults {
        fn roll(&mut self) -> bool {
            let Some((state, chance)) = &mut self.random else {
                return false;
            };
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state % 1000 < *chance
        }
    }

    struct FaultyIo(Arc<Mutex<Faults>>);

    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    impl SegmentIo for FaultyIo {
        fn write_all(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
            let mut faults = self.0.lock().unwrap();
            faults.writes += 1;
            if faults.full {
                file.write_all(&bytes[..bytes.len() / 2])?;
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            if faults.fail_write_on == Some(faults.writes) || faults.roll() {
                file.write_all(&bytes[..bytes.len() / 3])?;
                return Err(io::Error::from_raw_os_error(EIO));
            }
            file.write_all(bytes)
        }
        fn sync_data(&mut self, file: &File) -> io::Result<()> {
            let mut faults = self.0.lock().unwrap();
            faults.syncs += 1;
            if faults.fail_sync_on == Some(faults.syncs) || faults.roll() {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            file.sync_data()
        }
        fn set_len(&mut self, file: &File, len: u64) -> io::Result<()> {
            let mut faults = self.0.lock().unwrap();
            if faults.truncate_fails || faults.roll() {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            file.set_len(len)
        }
        fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
            let mut faults = self.0.lock().unwrap();
            if faults.dir_sync_fails || faults.roll() {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            File::open(dir)?.sync_all()
        }
    }

    /// Opens a copy of `dir` as the next start after a crash would (no repair); returns its
    /// records as (sequence, payload).
    fn reopen_copy(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
        let (_, replay) =
            Journal::open(copy.path(), false).expect("a crash copy opens without repair");
        replay
            .records
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect()
    }

    #[test]
    fn a_failed_disk_is_survived_without_reopening_and_reopen_never_needs_repair() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (journal, _) =
            Journal::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
        let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut counter = 0;
        let mut append = |journal: &Journal, acked: &mut Vec<(u64, Vec<u8>)>| {
            counter += 1;
            let payload = format!("mutation {counter}").into_bytes();
            let result = journal.append_blocking(payload.clone());
            if let Ok(seq) = result {
                acked.push((seq, payload));
            }
            result
        };
        // Fill.
        for _ in 0..5 {
            append(&journal, &mut acked).unwrap();
        }
        // The disk fills: each append fails with ENOSPC (a partial record is left each time) and
        // none is refused without trying.
        faults.lock().unwrap().full = true;
        for _ in 0..3 {
            let error = append(&journal, &mut acked).unwrap_err().to_string();
            assert!(error.contains("No space left on device"), "{error}");
        }
        assert_eq!(
            faults.lock().unwrap().writes,
            5 + 3,
            "a failed journal must retry"
        );
        assert!(journal.error().is_some());
        // A rotation (compaction) while full cuts the partial record away, then cannot create
        // the new segment: it fails and leaves no segment file behind.
        assert!(journal.rotate_blocking().is_err());
        assert_eq!(journal.files().len(), 1);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "a temporary segment was left"
        );
        assert_eq!(reopen_copy(dir.path()), acked);
        // Truncation fails too: appends and rotations keep failing, and a crash now still
        // opens without repair (the partial record is the last segment's torn tail).
        faults.lock().unwrap().truncate_fails = true;
        assert!(append(&journal, &mut acked).is_err());
        assert!(append(&journal, &mut acked).is_err());
        assert!(journal.rotate_blocking().is_err());
        assert_eq!(journal.files().len(), 1, "rotated past a partial record");
        assert_eq!(reopen_copy(dir.path()), acked);
        // Space is back: the next append succeeds, numbered right after the last acked one.
        {
            let mut faults = faults.lock().unwrap();
            faults.full = false;
            faults.truncate_fails = false;
        }
        assert_eq!(append(&journal, &mut acked).unwrap(), 6);
        assert!(journal.error().is_none());
        assert_eq!(journal.rotate_blocking().unwrap(), 6);
        append(&journal, &mut acked).unwrap();
        // A failed fsync: the record may be whole in the page cache, but it was never
        // confirmed, so it is cut away before the next write (and never replayed).
        let syncs = faults.lock().unwrap().syncs;
        faults.lock().unwrap().fail_sync_on = Some(syncs + 1);
        let error = append(&journal, &mut acked).unwrap_err().to_string();
        assert!(error.contains("fsync"), "{error}");
        append(&journal, &mut acked).unwrap();
        // EIO on a write after part of the bytes went out.
        let writes = faults.lock().unwrap().writes;
        faults.lock().unwrap().fail_write_on = Some(writes + 1);
        assert!(append(&journal, &mut acked).is_err());
        append(&journal, &mut acked).unwrap();
        // A directory fsync that fails after the new segment was renamed into place: the
        // rotation fails, nothing in the new segment is acknowledged until the directory syncs.
        faults.lock().unwrap().dir_sync_fails = true;
        assert!(journal.rotate_blocking().is_err());
        assert!(journal.rotate_blocking().is_err());
        assert!(append(&journal, &mut acked).is_err());
        faults.lock().unwrap().dir_sync_fails = false;
        append(&journal, &mut acked).unwrap();
        assert_eq!(reopen_copy(dir.path()), acked);
        // Concurrent appenders while the disk fills and frees again: every acknowledged record
        // and nothing else survives.
        let journal = Arc::new(journal);
        let appenders: Vec<_> = (0..4)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..200 {
                        let payload = format!("{t}-{i}").into_bytes();
                        if let Ok(seq) = journal.append_blocking(payload.clone()) {
                            acked.push((seq, payload));
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut round = 0;
        while appenders.iter().any(|a| !a.is_finished()) {
            round += 1;
            faults.lock().unwrap().full = round % 3 == 0;
            if round % 5 == 0 {
                let _ = journal.rotate_blocking();
            }
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        faults.lock().unwrap().full = false;
        for appender in appenders {
            acked.extend(appender.join().unwrap());
        }
        acked.sort();
        drop(journal);
        let (journal, replay) = Journal::open(dir.path(), false).expect("reopens without repair");
        assert!(replay.torn_tail.is_none() && replay.repaired.is_none());
        let replayed: Vec<(u64, Vec<u8>)> = replay
            .records
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect();
        assert_eq!(replayed, acked);
        assert_eq!(
            journal.append_blocking(b"after".to_vec()).unwrap(),
            acked.last().unwrap().0 + 1
        );
    }

    /// A crash copy replays every acknowledged record, in order, and at most whole records of
    /// the one group whose fsync failed after them (never acknowledged, may be on disk).
    fn assert_acked_replay(replayed: &[(u64, Vec<u8>)], acked: &[(u64, Vec<u8>)], context: &str) {
        assert!(
            replayed.len() >= acked.len() && replayed[..acked.len()] == *acked,
            "{context}: acknowledged records lost or reordered"
        );
    }

    #[test]
    fn random_faults_never_lose_an_acknowledged_record_nor_need_repair() {
        for seed in 1..=8u64 {
            let dir = tempfile::tempdir().unwrap();
            let faults = Arc::new(Mutex::new(Faults {
                random: Some((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 150)),
                ..Faults::default()
            }));
            let (journal, _) =
                Journal::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone())))
                    .unwrap();
            let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut refused = 0;
            for step in 0..300u64 {
                match step % 10 {
                    7 => {
                        let _ = journal.rotate_blocking();
                    }
                    9 => assert_acked_replay(
                        &reopen_copy(dir.path()),
                        &acked,
                        &format!("seed {seed} step {step}"),
                    ),
                    _ => {
                        let payload = format!("{seed}-{step}").into_bytes();
                        match journal.append_blocking(payload.clone()) {
                            Ok(seq) => {
                                assert_eq!(seq, acked.last().map_or(1, |a| a.0 + 1));
                                acked.push((seq, payload));
                            }
                            Err(_) => refused += 1,
                        }
                    }
                }
            }
            assert!(
                refused > 0 && !acked.is_empty(),
                "seed {seed}: no faults hit"
            );
            faults.lock().unwrap().random = None;
            drop(journal);
            let (_, replay) = Journal::open(dir.path(), false).expect("reopens without repair");
            let replayed: Vec<(u64, Vec<u8>)> = replay
                .records
                .into_iter()
                .map(|r| (r.seq, r.payload))
                .collect();
            assert_eq!(replayed, acked, "seed {seed}");
        }
    }

    #[test]
    fn a_group_of_appends_is_durable_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (journal, _) =
            Journal::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
        faults.lock().unwrap().full = true;
        let payloads: Vec<Vec<u8>> = (0..50).map(|i| vec![i; 100]).collect();
        assert!(journal.append_all_blocking(payloads.clone()).is_err());
        faults.lock().unwrap().full = false;
        assert_eq!(journal.append_all_blocking(payloads).unwrap(), Some(50));
        drop(journal);
        let (_, replay) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(replay.records.len(), 50);
    }

    #[test]
    fn scanning_arbitrary_bytes_never_panics() {
        let mut records = Vec::new();
        let mut bytes = segment_header(1).to_vec();
        encode_record(1, b"hello", &mut bytes);
        for cut in 0..bytes.len() {
            let _ = scan_segment(&bytes[..cut], &mut records);
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xff;
            records.clear();
            let (_, scan) = scan_segment(&bad, &mut records);
            // Every flipped byte is noticed: header fields, reserved bytes, length, CRC, payload.
            assert_ne!(scan, Scan::Clean, "flip at {at}");
        }
    }
}
