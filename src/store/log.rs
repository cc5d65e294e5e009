//! An append-only, checksummed, group-committed log in a directory of segments: the mutation
//! journal, the audit log and the ledger are each one [`Log`].
//!
//! [`Log::open`] replays every segment in order. A torn last record (a crash mid-write) is
//! dropped with a warning and truncated away; damage before the tail stops start-up with the
//! file and offset, unless repair is asked for, which truncates at the damage. Appends are
//! completed on the writer thread ([`super::writer`]) once fsynced, in sequence order.
//! Compaction rotates to a new segment and later drops whole segments it has made redundant.
//! Knows nothing of what payloads mean and records no metrics (see [`CommitObserver`]).

use super::segment::{
    LogError, MAX_PAYLOAD, RECORD_HEADER, Record, SEGMENT_HEADER, Scan, io_error,
    remove_temporary_segments, scan_segment, segment_header, segment_path, segments, sync_dir,
    truncate,
};
use super::writer::{
    CommitObserver, Completion, Job, OsIo, Queue, SegmentIo, Shared, Stats, Unobserved, Writer,
};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// What opening the journal found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<Record>,
    /// A torn final record that was dropped: (file, offset).
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Damage that repair truncated away: (file, offset, reason).
    pub repaired: Option<(PathBuf, u64, String)>,
}

/// An open log with its writer thread.
pub struct Log {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// Opens (creating if needed) the journal in `dir`, replays it, and starts the writer.
    pub fn open(dir: &Path, repair: bool) -> Result<(Log, Replay), LogError> {
        Log::open_with_io(dir, repair, Box::new(OsIo))
    }

    /// [`Log::open`] with the writer's file operations going through `io`.
    pub fn open_with_io(
        dir: &Path,
        repair: bool,
        io: Box<dyn SegmentIo>,
    ) -> Result<(Log, Replay), LogError> {
        Log::open_with(dir, repair, io, Arc::new(Unobserved))
    }

    /// [`Log::open`] with the writer's file operations going through `io` and each group
    /// commit's figures and failures reported to `observer`.
    pub fn open_with(
        dir: &Path,
        repair: bool,
        io: Box<dyn SegmentIo>,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<(Log, Replay), LogError> {
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
                return Err(LogError::Damaged {
                    path: path.clone(),
                    offset: 8,
                    reason: "segment name and header disagree".into(),
                });
            }
            if replay.records.len() > before && replay.records[before].seq != next_seq && before > 0
            {
                return Err(LogError::Damaged {
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
                    return Err(LogError::Damaged {
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
                    observer,
                }
                .run()
            })
            .map_err(io_error(dir))?;
        let journal = Log {
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
            done(Err(LogError::TooLarge(payload.len()).to_string()));
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

    /// [`Log::append`], but only as sequence number `seq`: refused (`done` runs with the
    /// error, `None` returned) when the next record would carry another. A failed group commit
    /// gives its sequence numbers out again, so a caller that queues records behind others
    /// still in flight and needs them durable in its order (the fleet follower) must never
    /// have a later record written in place of an earlier failed one. Checked under the queue
    /// lock the writer gives the numbers back under.
    pub fn append_as(&self, seq: u64, payload: Vec<u8>, done: Completion) -> Option<u64> {
        if payload.len() > MAX_PAYLOAD {
            done(Err(LogError::TooLarge(payload.len()).to_string()));
            return None;
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.next_seq != seq {
            let next = queue.next_seq;
            drop(queue);
            done(Err(format!(
                "the record would be {next}, not {seq}: an earlier group commit failed"
            )));
            return None;
        }
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
    pub fn append_blocking(&self, payload: Vec<u8>) -> Result<u64, LogError> {
        let (send, receive) = std::sync::mpsc::channel();
        let _ = self.append(
            payload,
            Box::new(move |result| {
                let _ = send.send(result);
            }),
        );
        receive
            .recv()
            .map_err(|_| LogError::Failed("writer stopped".into()))?
            .map_err(LogError::Failed)
    }

    /// Appends every payload (one group commit) and waits until they are durable; returns the
    /// last one's sequence number (`None` for no payloads). All or none: they are queued under
    /// one lock, so the writer takes them in one group, and a failure fails all of them (never
    /// a durable suffix after a failed prefix, which would make a reader of the last record
    /// believe the earlier ones are there).
    pub fn append_all_blocking(&self, payloads: Vec<Vec<u8>>) -> Result<Option<u64>, LogError> {
        let count = payloads.len();
        if count == 0 {
            return Ok(None);
        }
        if let Some(large) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(LogError::TooLarge(large.len()));
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
            .map_err(|_| LogError::Failed("writer stopped".into()))?
            .map(Some)
            .map_err(LogError::Failed)
    }

    /// Starts a new segment; returns the sequence number of the last record in older segments.
    pub fn rotate_blocking(&self) -> Result<u64, LogError> {
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
            .map_err(|_| LogError::Failed("writer stopped".into()))?
            .map_err(LogError::Failed);
        self.refresh_stats();
        result
    }

    /// The first sequence number of the oldest segment on disk: every record below it is
    /// gone (None: no segment).
    pub fn first_seq(&self) -> Result<Option<u64>, LogError> {
        Ok(segments(&self.shared.dir)?.first().map(|(first, _)| *first))
    }

    /// Deletes every segment whose records all have sequence numbers ≤ `through` (never the
    /// segment being written). Returns how many were deleted.
    pub fn drop_through(&self, through: u64) -> Result<usize, LogError> {
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

impl Drop for Log {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::encode_record;
    use std::io;

    fn payloads(journal: &Log, count: u64) -> Vec<u64> {
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
        let (journal, replay) = Log::open(dir.path(), false).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(payloads(&journal, 10), (1..=10).collect::<Vec<_>>());
        drop(journal);
        let (journal, replay) = Log::open(dir.path(), false).unwrap();
        assert_eq!(replay.records.len(), 10);
        assert_eq!(replay.records[3].payload, b"mutation 3");
        assert_eq!(journal.append_blocking(b"next".to_vec()).unwrap(), 11);
    }

    #[test]
    fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Log::open(dir.path(), false).unwrap();
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
        let (journal, _) = Log::open(dir.path(), false).unwrap();
        payloads(&journal, 5);
        let file = journal.files()[0].clone();
        drop(journal);
        let full = std::fs::read(&file).unwrap();
        // Every cut inside the last record is a torn tail: 4 records survive.
        let last_record = full.len() - (RECORD_HEADER + 8 + b"mutation 4".len());
        for cut in last_record..full.len() {
            std::fs::write(&file, &full[..cut]).unwrap();
            let (journal, replay) = Log::open(dir.path(), false).unwrap();
            assert_eq!(replay.records.len(), 4, "cut at {cut}");
            assert!(replay.torn_tail.is_some() || cut == last_record);
            drop(journal);
        }
        // A flipped byte in the second record, with records after it: damage.
        let mut damaged = full.clone();
        damaged[SEGMENT_HEADER as usize + 30] ^= 0x40;
        std::fs::write(&file, &damaged).unwrap();
        let error = Log::open(dir.path(), false).err().expect("damage accepted");
        let message = error.to_string();
        assert!(
            message.contains(&file.display().to_string()) && message.contains("offset"),
            "{message}"
        );
        // Repair keeps what precedes the damage.
        let (_, replay) = Log::open(dir.path(), true).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert!(replay.repaired.is_some());
    }

    #[test]
    fn rotation_and_dropping_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Log::open(dir.path(), false).unwrap();
        payloads(&journal, 3);
        assert_eq!(journal.rotate_blocking().unwrap(), 3);
        payloads(&journal, 2);
        assert_eq!(journal.files().len(), 2);
        assert_eq!(journal.drop_through(3).unwrap(), 1);
        assert_eq!(journal.files().len(), 1);
        drop(journal);
        let (journal, replay) = Log::open(dir.path(), false).unwrap();
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
        let (journal, _) = Log::open(dir.path(), false).unwrap();
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
        let (_, replay) = Log::open(dir.path(), false).expect("journal reopens");
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
        let (_, replay) = Log::open(copy.path(), false).expect("a crash copy opens without repair");
        replay
            .records
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect()
    }

    /// A record queued behind a failed group as the sequence it was meant to carry is refused
    /// (the number was given out again), so it is never durable in place of the failed one.
    #[test]
    fn append_as_refuses_a_sequence_given_out_again_after_a_failed_group() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (journal, _) =
            Log::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
        let outcome = |journal: &Log, seq: u64, text: &str| {
            let (send, receive) = std::sync::mpsc::channel();
            let queued = journal.append_as(
                seq,
                text.as_bytes().to_vec(),
                Box::new(move |result| send.send(result).unwrap()),
            );
            (queued, receive.recv().unwrap())
        };
        assert_eq!(outcome(&journal, 1, "first"), (Some(1), Ok(1)));
        faults.lock().unwrap().full = true;
        assert!(outcome(&journal, 2, "second").1.is_err());
        faults.lock().unwrap().full = false;
        // 2 failed and is given out again: "third", queued as 3, must not become 2.
        let (queued, result) = outcome(&journal, 3, "third");
        assert_eq!(queued, None);
        assert!(result.unwrap_err().contains("would be 2, not 3"));
        assert_eq!(outcome(&journal, 2, "second").1, Ok(2));
        drop(journal);
        let (_, replay) = Log::open(dir.path(), false).unwrap();
        let payloads: Vec<&[u8]> = replay.records.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(payloads, [&b"first"[..], b"second"]);
    }

    #[test]
    fn a_failed_disk_is_survived_without_reopening_and_reopen_never_needs_repair() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (journal, _) =
            Log::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
        let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut counter = 0;
        let mut append = |journal: &Log, acked: &mut Vec<(u64, Vec<u8>)>| {
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
        let (journal, replay) = Log::open(dir.path(), false).expect("reopens without repair");
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
                Log::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
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
            let (_, replay) = Log::open(dir.path(), false).expect("reopens without repair");
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
            Log::open_with_io(dir.path(), false, Box::new(FaultyIo(faults.clone()))).unwrap();
        faults.lock().unwrap().full = true;
        let payloads: Vec<Vec<u8>> = (0..50).map(|i| vec![i; 100]).collect();
        assert!(journal.append_all_blocking(payloads.clone()).is_err());
        faults.lock().unwrap().full = false;
        assert_eq!(journal.append_all_blocking(payloads).unwrap(), Some(50));
        drop(journal);
        let (_, replay) = Log::open(dir.path(), false).unwrap();
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

    /// Counts what the writer reports, as the daemon's metrics observer would.
    #[derive(Default)]
    struct Counting {
        records: std::sync::atomic::AtomicUsize,
        commits: std::sync::atomic::AtomicUsize,
        no_space: std::sync::atomic::AtomicUsize,
    }

    impl crate::store::CommitObserver for Counting {
        fn committed(&self, records: usize, _bytes: usize, _took: std::time::Duration) {
            use std::sync::atomic::Ordering::Relaxed;
            self.records.fetch_add(records, Relaxed);
            self.commits.fetch_add(1, Relaxed);
        }
        fn failed(&self, kind: crate::store::FailureKind) {
            if kind == crate::store::FailureKind::NoSpace {
                self.no_space
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn each_log_reports_its_own_commits_and_failures_to_its_observer() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (observer, other) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        let (journal, _) = Log::open_with(
            &dir.path().join("journal"),
            false,
            Box::new(FaultyIo(faults.clone())),
            observer.clone(),
        )
        .unwrap();
        // A second log (as the audit log is) reports to its own observer, never to the first.
        let (audit, _) = Log::open_with(
            &dir.path().join("audit"),
            false,
            Box::new(OsIo),
            other.clone(),
        )
        .unwrap();
        for i in 0..5 {
            journal
                .append_blocking(format!("m{i}").into_bytes())
                .unwrap();
        }
        journal
            .append_all_blocking(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
            .unwrap();
        audit
            .append_all_blocking(vec![b"x".to_vec(), b"y".to_vec()])
            .unwrap();
        assert_eq!(observer.records.load(Relaxed), 8);
        assert_eq!(
            observer.commits.load(Relaxed),
            6,
            "five single appends and one group"
        );
        assert_eq!(other.records.load(Relaxed), 2);
        faults.lock().unwrap().full = true;
        assert!(journal.append_blocking(b"full".to_vec()).is_err());
        assert_eq!(observer.no_space.load(Relaxed), 1);
        assert_eq!(
            observer.records.load(Relaxed),
            8,
            "a failed group is not counted"
        );
        assert_eq!(other.no_space.load(Relaxed), 0);
    }
}
