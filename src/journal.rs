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

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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
    #[error("journal is closed after a write failure: {0}")]
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
    failed: Option<String>,
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
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                next_seq,
                closed: false,
                writer_waiting: false,
                failed: None,
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
            .spawn(move || writer_loop(writer_shared, file, path, next_seq))
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
        if let Some(failure) = &queue.failed {
            let failure = failure.clone();
            drop(queue);
            done(Err(failure));
            return None;
        }
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

    /// Appends every payload (one group commit when the writer is idle) and waits until the
    /// last is durable; returns its sequence number (`None` for no payloads). Records complete
    /// in order and a failure fails every later record, so waiting for the last one suffices.
    pub fn append_all_blocking(&self, payloads: Vec<Vec<u8>>) -> Result<Option<u64>, JournalError> {
        let count = payloads.len();
        let (send, receive) = std::sync::mpsc::channel();
        for (index, payload) in payloads.into_iter().enumerate() {
            if index + 1 < count {
                // A failure here also fails the last record, which is the one awaited.
                let _ = self.append(payload, Box::new(|_| {}));
            } else {
                let send = send.clone();
                let _ = self.append(
                    payload,
                    Box::new(move |result| {
                        let _ = send.send(result);
                    }),
                );
            }
        }
        drop(send);
        if count == 0 {
            return Ok(None);
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

/// `next_to_write` is the sequence number of the next record this thread writes. A new segment
/// is named after it, not after the queue's next number: appends queued after this round was
/// drained (they already hold their numbers) are written next, into the new segment.
fn writer_loop(shared: Arc<Shared>, mut file: File, mut path: PathBuf, mut next_to_write: u64) {
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut done: Vec<(u64, Completion)> = Vec::new();
    // Swapped with the queue's each round, so neither side allocates once both have grown.
    let mut jobs: VecDeque<Job> = VecDeque::new();
    loop {
        {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            while queue.jobs.is_empty() && !queue.closed {
                queue.writer_waiting = true;
                queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                queue.writer_waiting = false;
            }
            if queue.jobs.is_empty() && queue.closed {
                return;
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
        let result = (|| -> std::io::Result<()> {
            if !buffer.is_empty() {
                file.write_all(&buffer)?;
                file.sync_data()?;
            }
            Ok(())
        })();
        if !buffer.is_empty() && result.is_ok() {
            let metrics = crate::metrics::metrics();
            metrics
                .journal_fsync
                .record(started.elapsed().as_secs_f64());
            metrics.journal_appends.increment(done.len() as u64);
            metrics.journal_bytes_written.increment(buffer.len() as u64);
        }
        match result {
            Ok(()) => {
                {
                    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                    stats.appends += done.len() as u64;
                    stats.syncs += u64::from(!buffer.is_empty());
                    stats.bytes += buffer.len() as u64;
                    if let Some(seq) = last_seq {
                        stats.last_seq = seq;
                    }
                }
                if let Some(seq) = last_seq {
                    next_to_write = seq + 1;
                }
                for (seq, completion) in done.drain(..) {
                    completion(Ok(seq));
                }
            }
            Err(error) => {
                // Nothing after a failed write can be trusted: fail every waiting and later append,
                // so no mutation is acknowledged without being durable.
                let message = format!("journal {}: {error}", path.display());
                tracing::error!(%message, "journal write failed; mutations are refused from now on");
                shared
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed = Some(message.clone());
                for (_, completion) in done.drain(..) {
                    completion(Err(message.clone()));
                }
            }
        }
        for completion in rotations {
            let next_seq = next_to_write;
            let rotated = (|| -> std::io::Result<()> {
                let new_path = segment_path(&shared.dir, next_seq);
                if new_path != path {
                    let mut new_file = File::create(&new_path)?;
                    new_file.write_all(&segment_header(next_seq))?;
                    new_file.sync_all()?;
                    File::open(&shared.dir)?.sync_all()?;
                    file = OpenOptions::new().append(true).open(&new_path)?;
                    path = new_path;
                }
                Ok(())
            })();
            completion(rotated.map(|()| next_seq - 1).map_err(|e| e.to_string()));
        }
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
