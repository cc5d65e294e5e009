//! Loading a set's lookup structures from a decoded snapshot: each layout's sections, checked
//! for belonging together and handed to their validating views. Owns the refusals that name a
//! section and why; it must never let a section of one layout into another's set, and never
//! does I/O (the bytes are already mapped).

use super::{AnyFilter, Table};
use crate::engine::exact::ExactView;
use crate::engine::fuse::FilterWidth;
use crate::engine::fuse::{FuseView, ShardDescriptor, ShardPick};
use crate::engine::keys::{KeyScheme, SecretKey};
use crate::engine::lines::LineView;
use crate::engine::slots::SlotView;
use crate::engine::snapshot::{self, SectionId, SetHeader, SnapshotError, SnapshotLayout};
use std::path::Path;

/// Refuses any section outside a layout's own (`layout` names it in the message): a file
/// holds one layout's sections, never a mix.
fn only_sections(parts: &Parts<'_>, own: &[SectionId], layout: &str) -> Result<(), SnapshotError> {
    match parts.layout.sections.iter().find(|s| !own.contains(&s.id)) {
        Some(foreign) => Err(parts.corrupt(
            foreign.id,
            &format!("section of another layout in a {layout} set"),
        )),
        None => Ok(()),
    }
}

/// The slot-table layout: its sections, and none of the other layouts'. Slot tables hold no
/// expiry dates and no keyed fingerprints.
pub(super) fn load_slots(parts: &Parts<'_>, header: &SetHeader) -> Result<Table, SnapshotError> {
    only_sections(
        parts,
        &[
            SectionId::SlotInfo,
            SectionId::SlotLines,
            SectionId::SlotSpill,
        ],
        "slot-table",
    )?;
    if header.has_expiry || header.scheme != KeyScheme::E164 {
        return Err(parts.corrupt(
            SectionId::SlotInfo,
            "a slot table holds plain numbers without expiry dates",
        ));
    }
    let view = SlotView::new(
        parts.words(SectionId::SlotInfo)?,
        parts.words(SectionId::SlotLines)?,
        parts.words(SectionId::SlotSpill)?,
    )
    .map_err(|r| parts.corrupt(SectionId::SlotLines, &r))?;
    if view.key_count() != header.key_count {
        return Err(parts.corrupt(SectionId::SlotInfo, "key count differs from the header's"));
    }
    Ok(Table::Slots(view))
}

/// The line-table layout: its sections, and none of the other layout's.
pub(super) fn load_lines(parts: &Parts<'_>, header: &SetHeader) -> Result<Table, SnapshotError> {
    only_sections(
        parts,
        &[
            SectionId::LineInfo,
            SectionId::LineIndex,
            SectionId::Lines,
            SectionId::LineRanks,
            SectionId::Expiry,
        ],
        "line-table",
    )?;
    let ranks = match (
        header.has_expiry,
        parts.layout.section(SectionId::LineRanks),
    ) {
        (true, Some(_)) => Some(parts.words(SectionId::LineRanks)?),
        (false, None) => None,
        (true, None) => return Err(parts.corrupt(SectionId::LineRanks, "missing")),
        (false, Some(_)) => {
            return Err(parts.corrupt(SectionId::LineRanks, "ranks in a set without expiry"));
        }
    };
    let view = LineView::new(
        parts.words(SectionId::LineInfo)?,
        parts.words(SectionId::LineIndex)?,
        parts.words(SectionId::Lines)?,
        ranks,
    )
    .map_err(|r| parts.corrupt(SectionId::Lines, &r))?;
    if view.key_count() != header.key_count {
        return Err(parts.corrupt(SectionId::LineInfo, "key count differs from the header's"));
    }
    Ok(Table::Lines(view))
}

/// The filter + Elias-Fano layout.
pub(super) fn load_classic(parts: &Parts<'_>, header: &SetHeader) -> Result<Table, SnapshotError> {
    only_sections(
        parts,
        &[
            SectionId::FilterShards,
            SectionId::FilterFingerprints,
            SectionId::ChunkFirst,
            SectionId::ChunkMeta,
            SectionId::Directory,
            SectionId::Lows,
            SectionId::Expiry,
        ],
        "filter + Elias-Fano",
    )?;
    let shards_words: &[u64] = parts.words(SectionId::FilterShards)?;
    if !shards_words.len().is_multiple_of(ShardDescriptor::WORDS) {
        return Err(parts.corrupt(SectionId::FilterShards, "shard table length"));
    }
    let shards: Box<[ShardDescriptor]> = shards_words
        .chunks(ShardDescriptor::WORDS)
        .map(ShardDescriptor::from_words)
        .collect();
    if shards.is_empty() != (header.key_count == 0) {
        return Err(parts.corrupt(SectionId::FilterShards, "shard count does not match keys"));
    }
    let pick = if parts.layout.format_version >= snapshot::MULTIPLICATIVE_PICK_VERSION {
        ShardPick::Multiplicative
    } else {
        ShardPick::Mixed
    };
    let filter = match header.filter {
        FilterWidth::Fuse8 => AnyFilter::Fuse8(
            FuseView::new(
                shards,
                parts.slice::<u8>(SectionId::FilterFingerprints)?,
                pick,
            )
            .map_err(|r| parts.corrupt(SectionId::FilterFingerprints, &r))?,
        ),
        FilterWidth::Fuse16 => AnyFilter::Fuse16(
            FuseView::new(
                shards,
                parts.slice::<u16>(SectionId::FilterFingerprints)?,
                pick,
            )
            .map_err(|r| parts.corrupt(SectionId::FilterFingerprints, &r))?,
        ),
    };
    let exact = ExactView::new(
        header.key_count,
        parts.words(SectionId::ChunkFirst)?,
        parts.words(SectionId::ChunkMeta)?,
        parts.words(SectionId::Directory)?,
        parts.words(SectionId::Lows)?,
    )
    .map_err(|r| parts.corrupt(SectionId::ChunkMeta, &r))?;
    // The filter must let every key of the table through, or it would answer "absent" for a
    // member. Checksums cannot catch a filter read with the wrong shard function (a file whose
    // version field was rewritten and resealed, or a builder bug), so every chunk's first key
    // is looked up: ~1 ms per 50 M keys, and a wrong shard function fails nearly all of them.
    let first_keys = exact.chunk_first_keys();
    let mut passed = vec![false; first_keys.len()];
    match &filter {
        AnyFilter::Fuse8(view) => view.contains_batch(first_keys, &mut passed),
        AnyFilter::Fuse16(view) => view.contains_batch(first_keys, &mut passed),
    }
    if let Some(chunk) = passed.iter().position(|&pass| !pass) {
        return Err(parts.corrupt(
            SectionId::FilterFingerprints,
            &format!("the filter does not hold the first key of chunk {chunk}"),
        ));
    }
    Ok(Table::Classic { filter, exact })
}

/// Matches a keyed snapshot with the caller's key; plain snapshots ignore any key.
pub(super) fn check_key(
    header: &SetHeader,
    key: Option<&SecretKey>,
) -> Result<Option<SecretKey>, String> {
    match header.scheme {
        KeyScheme::E164 => Ok(None),
        KeyScheme::SipHash24 => {
            let wanted = header.key_id.as_deref().unwrap_or("");
            let Some(key) = key else {
                return Err(format!(
                    "set '{}' holds keyed fingerprints (key id '{wanted}'); pass its key file",
                    header.name
                ));
            };
            if key.id() != wanted {
                return Err(format!(
                    "set '{}' needs key id '{wanted}' but the key file has id '{}'",
                    header.name,
                    key.id()
                ));
            }
            if key.check_value() != header.key_check {
                return Err(format!(
                    "key file with id '{wanted}' is not the key set '{}' was built with",
                    header.name
                ));
            }
            Ok(Some(key.clone()))
        }
    }
}

/// Typed access to a decoded layout's sections.
pub(super) struct Parts<'a> {
    pub(super) layout: &'a SnapshotLayout,
    pub(super) bytes: &'static [u8],
    pub(super) path: &'a Path,
}

impl Parts<'_> {
    pub(super) fn corrupt(&self, id: SectionId, reason: &str) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.to_owned(),
            offset: self.layout.section(id).map_or(0, |s| s.offset),
            reason: format!("section {}: {reason}", id.name()),
        }
    }

    pub(super) fn slice<T: bytemuck::Pod>(
        &self,
        id: SectionId,
    ) -> Result<&'static [T], SnapshotError> {
        let section = self
            .layout
            .section(id)
            .ok_or_else(|| self.corrupt(id, "missing"))?;
        let bytes = &self.bytes[section.offset as usize..(section.offset + section.len) as usize];
        bytemuck::try_cast_slice(bytes).map_err(|_| self.corrupt(id, "length or alignment"))
    }

    fn words(&self, id: SectionId) -> Result<&'static [u64], SnapshotError> {
        self.slice::<u64>(id)
    }
}
