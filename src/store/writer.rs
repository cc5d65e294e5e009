//! The log's writer thread: group commit (every append queued meanwhile goes out in one
//! `write` and one `sync_data`, and only then are they completed), rotation, and recovery from
//! a failed write or fsync.
//!
//! A failed group commit (ENOSPC, EIO on write or fsync) fails the appends of that group and
//! every append queued behind it (their sequence numbers are given out again), and marks the
//! segment dirty: before the writer writes, rotates or exits again it cuts the segment back to
//! the end of its last durable record and fsyncs that, so a partial or unconfirmed record never
//! stays in a segment that anything follows. Nothing is sticky: once the disk accepts writes
//! again the next append succeeds. A new segment is written under a temporary name and renamed
//! into place, so no segment file ever has a partial header.
//!
//! Records no metrics: each group's figures and each failure's kind go to the log owner's
//! [`CommitObserver`], so the mutation journal, the audit log and the ledger count apart.

use super::segment::{SEGMENT_HEADER, encode_record, segment_header, segment_path};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Size and position of a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub segments: u64,
    pub last_seq: u64,
    pub appends: u64,
    pub syncs: u64,
}

/// Why a group commit failed, for its owner's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// ENOSPC or EDQUOT on a write or fsync.
    NoSpace = 0,
    /// Any other error of an fsync (the page cache state is then unknown).
    Fsync = 1,
    /// Any other error of a write, truncation, rename or file creation.
    Io = 2,
}

impl FailureKind {
    pub const ALL: [FailureKind; 3] = [FailureKind::NoSpace, FailureKind::Fsync, FailureKind::Io];

    pub fn name(self) -> &'static str {
        match self {
            FailureKind::NoSpace => "no_space",
            FailureKind::Fsync => "fsync",
            FailureKind::Io => "io",
        }
    }
}

/// What a log tells its owner after each group commit (on the writer thread: keep it short).
pub trait CommitObserver: Send + Sync + 'static {
    /// `records` records of `bytes` bytes were written and fsynced in `took`.
    fn committed(&self, _records: usize, _bytes: usize, _took: Duration) {}
    /// A write, fsync or rotation failed.
    fn failed(&self, _kind: FailureKind) {}
}

/// An observer that ignores everything.
pub struct Unobserved;

impl CommitObserver for Unobserved {}

pub type Completion = Box<dyn FnOnce(Result<u64, String>) + Send>;

pub(super) enum Job {
    Append(Vec<u8>, u64, Completion),
    Rotate(Box<dyn FnOnce(Result<u64, String>) + Send>),
}

pub(super) struct Queue {
    pub(super) jobs: VecDeque<Job>,
    pub(super) next_seq: u64,
    pub(super) closed: bool,
    /// The writer is blocked on `wake`. Appends notify only then: a notify is a futex system
    /// call even with nobody waiting, and while the writer is busy writing or in fsync it will
    /// drain the queue anyway before it sleeps.
    pub(super) writer_waiting: bool,
    /// The last group commit failed with this (cleared by the next durable group). Status only:
    /// appends are never refused for it, each is a retry.
    pub(super) error: Option<String>,
}

pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    pub(super) dir: PathBuf,
    pub(super) stats: Mutex<Stats>,
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

/// A failed file operation of the writer: its kind (for the metric) and a message naming the
/// file.
type Failure = (FailureKind, String);

fn failure(path: &Path, what: &str, fsync: bool, error: &io::Error) -> Failure {
    let kind = if matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        FailureKind::NoSpace
    } else if fsync {
        FailureKind::Fsync
    } else {
        FailureKind::Io
    };
    (kind, format!("journal {}: {what}: {error}", path.display()))
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) io: Box<dyn SegmentIo>,
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// The sequence number of the next record this thread writes. A new segment is named after
    /// it, not after the queue's next number: appends queued after this round was drained (they
    /// already hold their numbers) are written next, into the new segment.
    pub(super) next_to_write: u64,
    /// Length of `file` through its last durable record.
    pub(super) durable_len: u64,
    /// `file` may hold bytes past `durable_len` (a group whose write or fsync failed): cut them
    /// away before writing, rotating or exiting.
    pub(super) dirty: bool,
    /// A new segment was renamed into place but the directory fsync failed: sync the directory
    /// before acknowledging a record in it.
    pub(super) dir_unsynced: bool,
    /// The last group failed (the queue's `error` is set).
    pub(super) failing: bool,
    pub(super) observer: Arc<dyn CommitObserver>,
}

impl Writer {
    pub(super) fn run(mut self) {
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
                        self.observer
                            .committed(done.len(), buffer.len(), started.elapsed());
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
                completion(self.rotate().map_err(|(kind, message)| {
                    self.observer.failed(kind);
                    message
                }));
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
        kind: FailureKind,
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
        self.observer.failed(kind);
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
