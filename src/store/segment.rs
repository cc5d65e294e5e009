//! The log file format shared by the mutation journal, the audit log and the ledger: segment
//! files `<first sequence number>.wal`, each a 24-byte header (magic, first sequence number,
//! CRC32C of both) followed by records `[length u32][crc32c u32][sequence u64][payload]`, the
//! CRC covering sequence and payload.
//!
//! Owns encoding, scanning (never panics: a torn tail or damage is reported with its offset),
//! listing and truncating segments. Knows nothing of what payloads mean, and records no
//! metrics.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub(super) const MAGIC: &[u8; 8] = b"SUPJRNL1";
pub(super) const SEGMENT_HEADER: u64 = 24;
pub(super) const RECORD_HEADER: usize = 8;
/// Largest payload accepted (a bulk import is split into several records above this).
pub const MAX_PAYLOAD: usize = 16 << 20;
pub(super) const EXTENSION: &str = "wal";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
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

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
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

/// `first_seq` of every segment file in `dir`, sorted.
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
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

pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{EXTENSION}"))
}

pub(super) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut header = [0u8; SEGMENT_HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&header[..16]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    header
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
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

pub(super) fn truncate(path: &Path, len: u64, rewrite_header: Option<u64>) -> Result<(), LogError> {
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
pub(super) fn remove_temporary_segments(dir: &Path) -> Result<(), LogError> {
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
