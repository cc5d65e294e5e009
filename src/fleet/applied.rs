//! `fleet.applied`: the last stream sequence this host applied, kept durably where journal
//! records no longer carry it.
//!
//! Every journal record applied from the stream carries its stream sequence, so replay finds
//! the applied sequence in the journal; but compaction deletes journal segments. Before it
//! does, it writes this file (atomically: temporary name, fsync, rename, directory fsync), and
//! at start the applied sequence is the larger of this file and the journal. The file is 16
//! bytes: magic `SFA1`, the sequence (u64 LE), CRC32C of the first 12 bytes. A damaged file
//! is refused with its path and reason, never guessed at. No tokio.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "fleet.applied";
const MAGIC: &[u8; 4] = b"SFA1";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The sequence the file records; 0 when there is none.
pub fn read(data_dir: &Path) -> Result<u64, String> {
    let path = path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let refuse = |reason: &str| Err(format!("{}: offset 0: {reason}", path.display()));
    if bytes.len() != 16 {
        return refuse("not 16 bytes");
    }
    if &bytes[..4] != MAGIC {
        return refuse("not a fleet.applied file (bad magic)");
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..12]) != crc {
        return refuse("checksum mismatch");
    }
    Ok(u64::from_le_bytes(
        bytes[4..12].try_into().expect("8 bytes"),
    ))
}

/// Records `seq` durably (atomic replace).
pub fn write(data_dir: &Path, seq: u64) -> Result<(), String> {
    let path = path(data_dir);
    let temporary = data_dir.join(format!("{FILE}.tmp"));
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&seq.to_le_bytes());
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
}
