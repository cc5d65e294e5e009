//! `fleet.applied`: the last stream sequence this host applied, kept durably where journal
//! records no longer carry it.
//!
//! Every journal record applied from the stream carries its stream sequence, so replay finds
//! the applied sequence in the journal; but compaction deletes journal segments. Before it
//! does, it writes this file (atomically: temporary name, fsync, rename, directory fsync), and
//! at start the applied sequence is the larger of this file and the journal. The file is 16
//! bytes: magic `SFA1`, the sequence (u64 LE), CRC32C of the first 12 bytes. A damaged file
//! is refused with its path and reason, never guessed at.
//!
//! `fleet.stream`: which stream those sequences belong to, the stream's creation time as
//! JetStream reports it (nanoseconds since the epoch). A stream deleted and made again starts
//! its sequences at 1 under a new creation time: a host that followed the old one must not
//! take the new one's sequences for the ones it applied (RUNBOOK: "stream replaced"). 16
//! bytes: magic `SFS1`, the creation time (i64 LE), CRC32C of the first 12 bytes; written
//! like `fleet.applied`. No tokio.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "fleet.applied";
const MAGIC: &[u8; 4] = b"SFA1";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The sequence the file records; 0 when there is none.
pub fn read(data_dir: &Path) -> Result<u64, String> {
    Ok(read_file(data_dir, FILE, MAGIC)?.map_or(0, u64::from_le_bytes))
}

/// Records `seq` durably (atomic replace).
pub fn write(data_dir: &Path, seq: u64) -> Result<(), String> {
    write_file(data_dir, FILE, MAGIC, seq.to_le_bytes())
}

pub const STREAM_FILE: &str = "fleet.stream";
const STREAM_MAGIC: &[u8; 4] = b"SFS1";

/// The creation time (ns since the epoch) of the stream this host follows; `None` when no
/// stream was recorded yet.
pub fn read_stream(data_dir: &Path) -> Result<Option<i64>, String> {
    Ok(read_file(data_dir, STREAM_FILE, STREAM_MAGIC)?.map(i64::from_le_bytes))
}

/// Records the stream this host follows, by its creation time (atomic replace).
pub fn write_stream(data_dir: &Path, created_ns: i64) -> Result<(), String> {
    write_file(
        data_dir,
        STREAM_FILE,
        STREAM_MAGIC,
        created_ns.to_le_bytes(),
    )
}

/// A u64 kept in a 16-byte `magic, value, crc` file (`fleet.instance`); `None` if absent.
pub(super) fn read_u64_file(
    data_dir: &Path,
    name: &str,
    magic: &[u8; 4],
) -> Result<Option<u64>, String> {
    Ok(read_file(data_dir, name, magic)?.map(u64::from_le_bytes))
}

/// Writes a u64 in a 16-byte `magic, value, crc` file (atomic replace).
pub(super) fn write_u64_file(
    data_dir: &Path,
    name: &str,
    magic: &[u8; 4],
    value: u64,
) -> Result<(), String> {
    write_file(data_dir, name, magic, value.to_le_bytes())
}

/// The 8 bytes of a 16-byte `magic, value, crc` file; `None` when it does not exist.
fn read_file(data_dir: &Path, name: &str, magic: &[u8; 4]) -> Result<Option<[u8; 8]>, String> {
    let path = data_dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let refuse = |reason: &str| Err(format!("{}: offset 0: {reason}", path.display()));
    if bytes.len() != 16 {
        return refuse("not 16 bytes");
    }
    if &bytes[..4] != magic {
        return refuse(&format!("not a {name} file (bad magic)"));
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..12]) != crc {
        return refuse("checksum mismatch");
    }
    Ok(Some(bytes[4..12].try_into().expect("8 bytes")))
}

fn write_file(data_dir: &Path, name: &str, magic: &[u8; 4], value: [u8; 8]) -> Result<(), String> {
    let path = data_dir.join(name);
    let temporary = data_dir.join(format!("{name}.tmp"));
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&value);
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let failed = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let mut file = std::fs::File::create(&temporary).map_err(|e| failed("create", e))?;
    file.write_all(&bytes).map_err(|e| failed("write", e))?;
    file.sync_all().map_err(|e| failed("fsync", e))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(|e| failed("rename into", e))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| failed("fsync the directory of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        write(dir.path(), 41).unwrap();
        write(dir.path(), 42).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 42);
        let good = std::fs::read(path(dir.path())).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(path(dir.path()), &bad).unwrap();
            let error = read(dir.path()).unwrap_err();
            assert!(error.contains("fleet.applied"), "{error}");
        }
        std::fs::write(path(dir.path()), &good[..10]).unwrap();
        assert!(read(dir.path()).unwrap_err().contains("16 bytes"));
    }

    #[test]
    fn the_stream_identity_round_trips_and_is_not_taken_for_the_applied_sequence() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_stream(dir.path()).unwrap(), None);
        write_stream(dir.path(), 1_765_000_000_123_456_789).unwrap();
        assert_eq!(
            read_stream(dir.path()).unwrap(),
            Some(1_765_000_000_123_456_789)
        );
        // Each file is refused as the other (their magic differs).
        std::fs::copy(dir.path().join(STREAM_FILE), path(dir.path())).unwrap();
        assert!(read(dir.path()).unwrap_err().contains("bad magic"));
        let mut bad = std::fs::read(dir.path().join(STREAM_FILE)).unwrap();
        bad[7] ^= 1;
        std::fs::write(dir.path().join(STREAM_FILE), &bad).unwrap();
        let error = read_stream(dir.path()).unwrap_err();
        assert!(
            error.contains("fleet.stream") && error.contains("checksum"),
            "{error}"
        );
    }
}
