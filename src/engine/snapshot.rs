//! Snapshot files: one immutable file per set version.
//!
//! Layout (little-endian):
//!
//! ```text
//! 0    magic "SUPPSNAP"            8  format version (u32)   12 header length (u32)
//! 16   kind, key scheme, filter width, flags (u8 each), 4 reserved bytes
//! 24   key count (u64)             32 set version (u64)      40 build time, unix seconds (i64)
//! 48   source date, days since 1970 (i32; i32::MIN = none), 4 reserved bytes
//! 56   key check value (u64; 0 for plain sets)
//! 64   section count (u32), reserved (u32)
//! 72   name length (u16), key id length (u16), source length (u32)
//! 80   section table: per section id (u32), reserved (u32), offset, length, xxh3-64 (u64 each)
//!      then name, key id and source bytes, zero padding to 8 bytes, and finally the xxh3-64 of
//!      every header byte before it.
//! ...  sections, each starting on a 64-byte boundary, so filter and exact table are used in
//!      place from a memory map.
//! ```
//!
//! Decoding checks everything before anything is used: magic, version, header checksum, field
//! ranges, section order, alignment and bounds, every section checksum, and that the file ends
//! where the last section does. Errors name the byte offset. Files are written to a temporary
//! name, fsynced, renamed and the directory fsynced, so a reader never sees a partial file and a
//! mapped file is never modified in place. This module never does I/O beyond its own files.

use crate::engine::date::Day;
use crate::engine::fuse::FilterWidth;
use crate::engine::keys::{KeyScheme, validate_key_id};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: [u8; 8] = *b"SUPPSNAP";
/// Version 5: plain-number sets may be a slot table (sections `slot-*`, see `engine::slots`).
/// Version 4: a filter of more than one shard picks a key's shard with one multiply
/// (`fuse::ShardPick::Multiplicative`) instead of a murmur finalizer. Version 3: plain-number
/// sets may be a line table (sections `line-*`, see `engine::lines`) instead of filter +
/// Elias-Fano. Version 2 files (filter + Elias-Fano, one 64-byte metadata line per chunk) still
/// load, their filters with the murmur shard pick. Files of any other version (1 had two
/// metadata words per chunk) are refused, never guessed at. Each file is written with the
/// oldest version that describes it (see [`encode`]), so older builds keep reading what they
/// can read correctly and refuse the rest.
pub const FORMAT_VERSION: u32 = 5;
/// The version whose slot-table sections are the newest thing in a file.
pub const SLOT_TABLE_VERSION: u32 = 5;
/// The version from which a multi-shard filter picks shards with one multiply.
pub const MULTIPLICATIVE_PICK_VERSION: u32 = 4;
/// The version whose line-table sections are the newest thing in a file.
pub const LINE_TABLE_VERSION: u32 = 3;
/// The oldest version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 2;
/// File name extension of snapshot files.
pub const EXTENSION: &str = "snap";
const FIXED_HEADER: usize = 80;
const SECTION_ENTRY: usize = 32;
const SECTION_ALIGN: usize = 64;
const MAX_SECTIONS: usize = 16;
const MAX_SOURCE: usize = 4096;

/// Whether a set blocks calls or grants them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// Do-not-call: registries, internal lists, erased persons.
    Block,
    /// Consent: numbers that may be called for a purpose, optionally until a date.
    Consent,
}

impl SetKind {
    pub fn code(self) -> u8 {
        match self {
            SetKind::Block => 1,
            SetKind::Consent => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<SetKind> {
        match code {
            1 => Some(SetKind::Block),
            2 => Some(SetKind::Consent),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SetKind::Block => "block",
            SetKind::Consent => "consent",
        }
    }
}

impl std::str::FromStr for SetKind {
    type Err = String;
    fn from_str(text: &str) -> Result<SetKind, String> {
        match text {
            "block" => Ok(SetKind::Block),
            "consent" => Ok(SetKind::Consent),
            _ => Err(format!(
                "unknown set kind '{text}' (expected block or consent)"
            )),
        }
    }
}

/// Everything the header of a snapshot says about its set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetHeader {
    pub name: String,
    pub kind: SetKind,
    pub scheme: KeyScheme,
    pub key_id: Option<String>,
    pub key_check: u64,
    pub filter: FilterWidth,
    pub has_expiry: bool,
    pub key_count: u64,
    pub version: u64,
    pub build_time: i64,
    pub source: String,
    /// Issue date of the source (the registry copy), for the freshness rule.
    pub source_date: Option<Day>,
}

/// Sections a snapshot can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SectionId {
    FilterShards = 1,
    FilterFingerprints = 2,
    ChunkFirst = 3,
    ChunkMeta = 4,
    Directory = 5,
    Lows = 6,
    Expiry = 7,
    LineInfo = 8,
    LineIndex = 9,
    Lines = 10,
    LineRanks = 11,
    SlotInfo = 12,
    SlotLines = 13,
    SlotSpill = 14,
}

impl SectionId {
    fn from_code(code: u32) -> Option<SectionId> {
        use SectionId::*;
        [
            FilterShards,
            FilterFingerprints,
            ChunkFirst,
            ChunkMeta,
            Directory,
            Lows,
            Expiry,
            LineInfo,
            LineIndex,
            Lines,
            LineRanks,
            SlotInfo,
            SlotLines,
            SlotSpill,
        ]
        .into_iter()
        .find(|id| *id as u32 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionId::FilterShards => "filter-shards",
            SectionId::FilterFingerprints => "filter-fingerprints",
            SectionId::ChunkFirst => "exact-chunk-keys",
            SectionId::ChunkMeta => "exact-chunk-meta",
            SectionId::Directory => "exact-directory",
            SectionId::Lows => "exact-low-bits",
            SectionId::Expiry => "expiry",
            SectionId::LineInfo => "line-info",
            SectionId::LineIndex => "line-index",
            SectionId::Lines => "lines",
            SectionId::LineRanks => "line-ranks",
            SectionId::SlotInfo => "slot-info",
            SectionId::SlotLines => "slot-lines",
            SectionId::SlotSpill => "slot-spill",
        }
    }
}

/// Where a section lives and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub id: SectionId,
    pub offset: u64,
    pub len: u64,
    pub checksum: u64,
}

/// A decoded, fully verified snapshot header and section table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotLayout {
    /// The file's format version (from [`OLDEST_READABLE_VERSION`] to [`FORMAT_VERSION`]).
    pub format_version: u32,
    pub header: SetHeader,
    pub header_len: u64,
    pub header_checksum: u64,
    pub sections: Vec<SectionInfo>,
    pub file_len: u64,
}

impl SnapshotLayout {
    pub fn section(&self, id: SectionId) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.id == id)
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {path}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("snapshot {path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("snapshot {path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

impl SnapshotError {
    pub fn path(&self) -> &Path {
        match self {
            SnapshotError::Io { path, .. }
            | SnapshotError::Corrupt { path, .. }
            | SnapshotError::Unsupported { path, .. }
            | SnapshotError::Key { path, .. } => path,
        }
    }
}

/// A decoding failure before the file's path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: u64,
    pub reason: String,
    pub unsupported: bool,
}

impl DecodeError {
    fn corrupt(offset: usize, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: offset as u64,
            reason: reason.into(),
            unsupported: false,
        }
    }

    pub fn at(self, path: &Path) -> SnapshotError {
        if self.unsupported {
            SnapshotError::Unsupported {
                path: path.to_owned(),
                reason: self.reason,
            }
        } else {
            SnapshotError::Corrupt {
                path: path.to_owned(),
                offset: self.offset,
                reason: self.reason,
            }
        }
    }
}

/// Set names: 1-64 characters of `[A-Za-z0-9._-]`, so they are safe in file names.
pub fn validate_set_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "set name '{}' must be 1-64 characters of letters, digits, '.', '_' or '-'",
            name.chars().take(64).collect::<String>()
        ))
    }
}

/// A snapshot's bytes in an 8-byte aligned buffer, ready to write or to serve from memory.
#[derive(Clone, Debug)]
pub struct SnapshotImage {
    words: Vec<u64>,
    len: usize,
}

impl SnapshotImage {
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes into an aligned image (for tests and tools that hold a file in memory).
    pub fn from_bytes(bytes: &[u8]) -> SnapshotImage {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        SnapshotImage {
            words,
            len: bytes.len(),
        }
    }

    pub(crate) fn into_words(self) -> (Vec<u64>, usize) {
        (self.words, self.len)
    }

    /// Writes the image atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn write_atomic(&self, path: &Path) -> Result<(), SnapshotError> {
        write_atomic(path, self.as_bytes()).map_err(|source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Encodes a header and its sections into one image of format `version`: the caller gives the
/// oldest version that describes the sections (a multi-shard filter with the multiplicative
/// shard pick needs [`MULTIPLICATIVE_PICK_VERSION`], slot-table sections
/// [`SLOT_TABLE_VERSION`], line-table sections [`LINE_TABLE_VERSION`], anything
/// else [`OLDEST_READABLE_VERSION`]), so builds that predate a change keep reading files the
/// change does not touch (rolling upgrades) and refuse the ones it does.
pub fn encode(header: &SetHeader, sections: &[(SectionId, &[u8])], version: u32) -> SnapshotImage {
    debug_assert!((OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version));
    debug_assert!(
        version >= LINE_TABLE_VERSION || sections.iter().all(|(id, _)| *id < SectionId::LineInfo),
        "line-table sections need format version 3"
    );
    debug_assert!(
        version >= SLOT_TABLE_VERSION || sections.iter().all(|(id, _)| *id < SectionId::SlotInfo),
        "slot-table sections need format version 5"
    );
    let name = header.name.as_bytes();
    let key_id = header.key_id.as_deref().unwrap_or("").as_bytes();
    let source = header.source.as_bytes();
    let strings_at = FIXED_HEADER + SECTION_ENTRY * sections.len();
    let header_len =
        (strings_at + name.len() + key_id.len() + source.len()).next_multiple_of(8) + 8;
    let mut offsets = Vec::with_capacity(sections.len());
    let mut end = header_len;
    for (_, bytes) in sections {
        let start = end.next_multiple_of(SECTION_ALIGN);
        offsets.push(start);
        end = start + bytes.len();
    }
    let mut out = vec![0u8; end];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&version.to_le_bytes());
    out[12..16].copy_from_slice(&(header_len as u32).to_le_bytes());
    out[16] = header.kind.code();
    out[17] = header.scheme.code();
    out[18] = header.filter.code();
    out[19] = u8::from(header.has_expiry);
    out[24..32].copy_from_slice(&header.key_count.to_le_bytes());
    out[32..40].copy_from_slice(&header.version.to_le_bytes());
    out[40..48].copy_from_slice(&header.build_time.to_le_bytes());
    let source_date = header.source_date.map_or(i32::MIN, |d| d.0);
    out[48..52].copy_from_slice(&source_date.to_le_bytes());
    out[56..64].copy_from_slice(&header.key_check.to_le_bytes());
    out[64..68].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    out[72..74].copy_from_slice(&(name.len() as u16).to_le_bytes());
    out[74..76].copy_from_slice(&(key_id.len() as u16).to_le_bytes());
    out[76..80].copy_from_slice(&(source.len() as u32).to_le_bytes());
    for (index, ((id, bytes), &offset)) in sections.iter().zip(&offsets).enumerate() {
        let at = FIXED_HEADER + index * SECTION_ENTRY;
        out[at..at + 4].copy_from_slice(&(*id as u32).to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&(offset as u64).to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        out[at + 24..at + 32].copy_from_slice(&xxh3_64(bytes).to_le_bytes());
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    let mut at = strings_at;
    for part in [name, key_id, source] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let checksum = xxh3_64(&out[..header_len - 8]);
    out[header_len - 8..header_len].copy_from_slice(&checksum.to_le_bytes());
    SnapshotImage::from_bytes(&out)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn utf8_at(bytes: &[u8], at: usize, len: usize, what: &str) -> Result<String, DecodeError> {
    std::str::from_utf8(&bytes[at..at + len])
        .map(str::to_owned)
        .map_err(|_| DecodeError::corrupt(at, format!("{what} is not UTF-8")))
}

/// Decodes and verifies a whole snapshot (header and every section checksum).
pub fn decode(bytes: &[u8]) -> Result<SnapshotLayout, DecodeError> {
    let layout = decode_header(bytes)?;
    for section in &layout.sections {
        let (start, end) = (
            section.offset as usize,
            (section.offset + section.len) as usize,
        );
        if xxh3_64(&bytes[start..end]) != section.checksum {
            return Err(DecodeError::corrupt(
                start,
                format!("section {} checksum mismatch", section.id.name()),
            ));
        }
    }
    Ok(layout)
}

/// Reads and verifies the header and section table of the snapshot file at `path`. The file
/// is mapped, so only the header's pages are read, whatever the file's size.
pub fn read_layout(path: &Path) -> Result<SnapshotLayout, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: snapshot files are immutable once renamed into place (never truncated or
    // rewritten), and only the header's bytes are read, inside the mapping's length.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    decode_header(&map).map_err(|e| e.at(path))
}

/// Decodes and verifies the header and section table, without reading section bytes.
pub fn decode_header(bytes: &[u8]) -> Result<SnapshotLayout, DecodeError> {
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(DecodeError::corrupt(
            0,
            "not a suppressd snapshot (bad magic)",
        ));
    }
    if bytes.len() < FIXED_HEADER + 8 {
        return Err(DecodeError::corrupt(
            bytes.len(),
            "file ends inside the header",
        ));
    }
    let version = u32_at(bytes, 8);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(DecodeError {
            offset: 8,
            reason: format!(
                "format version {version} is not supported (this build reads \
                 {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}; rebuild the set with this build)"
            ),
            unsupported: true,
        });
    }
    let header_len = u32_at(bytes, 12) as usize;
    if header_len < FIXED_HEADER + 8 || !header_len.is_multiple_of(8) {
        return Err(DecodeError::corrupt(
            12,
            format!("header length {header_len} is invalid"),
        ));
    }
    if header_len > bytes.len() {
        return Err(DecodeError::corrupt(
            bytes.len(),
            "file ends inside the header",
        ));
    }
    let stored = u64_at(bytes, header_len - 8);
    if xxh3_64(&bytes[..header_len - 8]) != stored {
        return Err(DecodeError::corrupt(
            header_len - 8,
            "header checksum mismatch",
        ));
    }
    let kind = SetKind::from_code(bytes[16])
        .ok_or_else(|| DecodeError::corrupt(16, format!("unknown set kind {}", bytes[16])))?;
    let scheme = KeyScheme::from_code(bytes[17])
        .ok_or_else(|| DecodeError::corrupt(17, format!("unknown key scheme {}", bytes[17])))?;
    let filter = FilterWidth::from_code(bytes[18])
        .ok_or_else(|| DecodeError::corrupt(18, format!("unknown filter width {}", bytes[18])))?;
    if bytes[19] > 1
        || bytes[20..24] != [0; 4]
        || bytes[52..56] != [0; 4]
        || bytes[68..72] != [0; 4]
    {
        return Err(DecodeError::corrupt(
            19,
            "reserved header bytes are not zero",
        ));
    }
    let has_expiry = bytes[19] == 1;
    let source_date = match u32_at(bytes, 48) as i32 {
        i32::MIN => None,
        days => Some(Day(days)),
    };
    let section_count = u32_at(bytes, 64) as usize;
    if section_count > MAX_SECTIONS {
        return Err(DecodeError::corrupt(
            64,
            format!("{section_count} sections is too many"),
        ));
    }
    let (name_len, key_id_len, source_len) = (
        u16_at(bytes, 72) as usize,
        u16_at(bytes, 74) as usize,
        u32_at(bytes, 76) as usize,
    );
    let strings_at = FIXED_HEADER + section_count * SECTION_ENTRY;
    if source_len > MAX_SOURCE
        || (strings_at + name_len + key_id_len + source_len).next_multiple_of(8) + 8 != header_len
    {
        return Err(DecodeError::corrupt(
            72,
            "header string lengths do not match header length",
        ));
    }
    let name = utf8_at(bytes, strings_at, name_len, "set name")?;
    validate_set_name(&name).map_err(|reason| DecodeError::corrupt(strings_at, reason))?;
    let key_id_at = strings_at + name_len;
    let key_id = utf8_at(bytes, key_id_at, key_id_len, "key id")?;
    let key_id = match (scheme, key_id.is_empty()) {
        (KeyScheme::E164, true) => None,
        (KeyScheme::SipHash24, false) => {
            validate_key_id(&key_id).map_err(|reason| DecodeError::corrupt(key_id_at, reason))?;
            Some(key_id)
        }
        _ => {
            return Err(DecodeError::corrupt(
                key_id_at,
                "key id does not match the key scheme",
            ));
        }
    };
    let source = utf8_at(bytes, key_id_at + key_id_len, source_len, "source")?;
    let padding_at = key_id_at + key_id_len + source_len;
    if bytes[padding_at..header_len - 8].iter().any(|&b| b != 0) {
        return Err(DecodeError::corrupt(
            padding_at,
            "header padding is not zero",
        ));
    }
    let mut sections = Vec::with_capacity(section_count);
    let mut end = header_len as u64;
    for index in 0..section_count {
        let at = FIXED_HEADER + index * SECTION_ENTRY;
        let code = u32_at(bytes, at);
        let id = SectionId::from_code(code)
            .filter(|&id| version >= 3 || id < SectionId::LineInfo)
            .filter(|&id| version >= SLOT_TABLE_VERSION || id < SectionId::SlotInfo)
            .ok_or_else(|| DecodeError::corrupt(at, format!("unknown section id {code}")))?;
        if sections
            .last()
            .is_some_and(|prev: &SectionInfo| prev.id >= id)
        {
            return Err(DecodeError::corrupt(
                at,
                "sections are out of order or repeated",
            ));
        }
        if u32_at(bytes, at + 4) != 0 {
            return Err(DecodeError::corrupt(
                at + 4,
                "reserved section bytes are not zero",
            ));
        }
        let offset = u64_at(bytes, at + 8);
        let len = u64_at(bytes, at + 16);
        if !offset.is_multiple_of(SECTION_ALIGN as u64)
            || offset < end
            || offset - end >= SECTION_ALIGN as u64
        {
            return Err(DecodeError::corrupt(
                at + 8,
                format!("section {} offset {offset} is misplaced", id.name()),
            ));
        }
        let gap = &bytes[end as usize..(offset as usize).min(bytes.len())];
        if gap.iter().any(|&b| b != 0) {
            return Err(DecodeError::corrupt(
                end as usize,
                "alignment padding is not zero",
            ));
        }
        match offset.checked_add(len) {
            Some(section_end) if section_end <= bytes.len() as u64 => end = section_end,
            _ => {
                return Err(DecodeError::corrupt(
                    bytes.len(),
                    format!("file is truncated: section {} ends past the end", id.name()),
                ));
            }
        }
        sections.push(SectionInfo {
            id,
            offset,
            len,
            checksum: u64_at(bytes, at + 24),
        });
    }
    if end != bytes.len() as u64 {
        return Err(DecodeError::corrupt(
            end as usize,
            format!(
                "{} unexpected bytes after the last section",
                bytes.len() as u64 - end
            ),
        ));
    }
    Ok(SnapshotLayout {
        format_version: version,
        header: SetHeader {
            name,
            kind,
            scheme,
            key_id,
            key_check: u64_at(bytes, 56),
            filter,
            has_expiry,
            key_count: u64_at(bytes, 24),
            version: u64_at(bytes, 32),
            build_time: u64_at(bytes, 40) as i64,
            source,
            source_date,
        },
        header_len: header_len as u64,
        header_checksum: stored,
        sections,
        file_len: bytes.len() as u64,
    })
}

/// Recomputes every checksum a damaged file's own layout points at, so fuzzing reaches the
/// structural checks behind them. Only for fuzz targets and tests.
#[doc(hidden)]
pub fn reseal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < FIXED_HEADER + 8 {
        return;
    }
    let header_len = u32_at(bytes, 12) as usize;
    let count = (u32_at(bytes, 64) as usize).min(MAX_SECTIONS);
    if header_len < FIXED_HEADER + 8 + count * SECTION_ENTRY || header_len > bytes.len() {
        return;
    }
    for index in 0..count {
        let at = FIXED_HEADER + index * SECTION_ENTRY;
        let offset = u64_at(bytes, at + 8);
        let len = u64_at(bytes, at + 16);
        if let Some(end) = offset
            .checked_add(len)
            .filter(|&end| end <= bytes.len() as u64)
        {
            let sum = xxh3_64(&bytes[offset as usize..end as usize]);
            bytes[at + 24..at + 32].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let sum = xxh3_64(&bytes[..header_len - 8]);
    bytes[header_len - 8..header_len].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SetHeader {
        SetHeader {
            name: "pl-registry".into(),
            kind: SetKind::Block,
            scheme: KeyScheme::E164,
            key_id: None,
            key_check: 0,
            filter: FilterWidth::Fuse8,
            has_expiry: false,
            key_count: 3,
            version: 7,
            build_time: 1_790_000_000,
            source: "test source".into(),
            source_date: Some(Day(20_000)),
        }
    }

    #[test]
    fn encodes_and_decodes_header_and_sections() {
        let image = encode(
            &header(),
            &[
                (SectionId::ChunkFirst, &[1, 2, 3]),
                (SectionId::Lows, &[9; 100]),
            ],
            OLDEST_READABLE_VERSION,
        );
        let layout = decode(image.as_bytes()).unwrap();
        assert_eq!(layout.format_version, OLDEST_READABLE_VERSION);
        assert_eq!(layout.header, header());
        assert_eq!(layout.sections.len(), 2);
        assert_eq!(layout.sections[1].offset % 64, 0);
        assert_eq!(layout.file_len as usize, image.len());
    }

    #[test]
    fn refuses_every_flip_and_truncation() {
        let image = encode(
            &header(),
            &[(SectionId::ChunkFirst, &[1, 2, 3, 4, 5, 6, 7, 8])],
            OLDEST_READABLE_VERSION,
        );
        let bytes = image.as_bytes();
        for at in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x10;
            // Alignment padding is covered by the must-be-zero rule rather than a checksum.
            assert!(decode(&bad).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn read_layout_reads_the_header_of_a_file_and_names_it_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.7.snap");
        let image = encode(
            &header(),
            &[(SectionId::Lows, &[9; 4096])],
            OLDEST_READABLE_VERSION,
        );
        image.write_atomic(&path).unwrap();
        let layout = read_layout(&path).unwrap();
        assert_eq!(layout.header, header());
        assert_eq!(layout.file_len, image.as_bytes().len() as u64);
        std::fs::write(&path, &image.as_bytes()[..40]).unwrap();
        let error = read_layout(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        let missing = read_layout(&dir.path().join("gone.snap")).unwrap_err();
        assert!(matches!(missing, SnapshotError::Io { .. }));
    }

    #[test]
    fn reseal_restores_a_valid_file() {
        let image = encode(
            &header(),
            &[(SectionId::ChunkFirst, &[1, 2, 3, 4, 5, 6, 7, 8])],
            OLDEST_READABLE_VERSION,
        );
        let mut bytes = image.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode(&bytes).is_err());
        reseal_for_fuzzing(&mut bytes);
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn wrong_version_is_unsupported() {
        let image = encode(&header(), &[], FORMAT_VERSION);
        for other in [OLDEST_READABLE_VERSION - 1, FORMAT_VERSION + 1] {
            let mut bad = image.as_bytes().to_vec();
            bad[8..12].copy_from_slice(&other.to_le_bytes());
            assert!(decode(&bad).unwrap_err().unsupported);
        }
    }

    #[test]
    fn version_2_files_load_without_line_sections() {
        let as_version_2 = |image: SnapshotImage| {
            let mut bytes = image.as_bytes().to_vec();
            bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
            reseal_for_fuzzing(&mut bytes);
            decode(&bytes)
        };
        let classic = encode(
            &header(),
            &[(SectionId::ChunkFirst, &[1, 2, 3, 4, 5, 6, 7, 8])],
            OLDEST_READABLE_VERSION,
        );
        assert!(as_version_2(classic).is_ok());
        let lines = encode(
            &header(),
            &[(SectionId::Lines, &[1, 2, 3, 4, 5, 6, 7, 8])],
            LINE_TABLE_VERSION,
        );
        let refused = as_version_2(lines).unwrap_err();
        assert!(refused.reason.contains("unknown section id"), "{refused:?}");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.snap");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
