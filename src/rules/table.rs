//! The generated tables (`data/locations.txt`, `data/holidays.txt`, written by
//! `tools/gen_rules.py`), embedded and parsed once: phone prefix → place (country, US state,
//! time zones) as disjoint ranges, and public holidays per region and year.
//!
//! In memory the prefix table is two arrays (range starts as u64, place ids as u16: about
//! 4 k ranges, 40 KB) and arrays by a number's first four digits (for NANP numbers, its area
//! code; 20-32 KB each): the place when one range covers the whole bucket (most area codes: one
//! read), else where the bucket's ranges start, to narrow the binary search to them. The
//! hundred split buckets have a second level by the next three digits (for NANP, the
//! exchange; 200 KB), so most of their numbers need one more read and no search.

use crate::engine::number::{Number, POW10};
use jiff::tz::TimeZone;
use std::collections::HashMap;
use std::sync::LazyLock;

const LOCATIONS: &str = include_str!("data/locations.txt");
const HOLIDAYS: &str = include_str!("data/holidays.txt");

/// Digits every number is padded to before a range search (E.164's maximum).
const WIDTH: u32 = 15;
const NO_PLACE: u16 = u16::MAX;
/// A bucket (or sub-bucket) that holds range starts: search them.
const SPLIT: u16 = u16::MAX - 1;
/// Buckets of the first-digits index: a number's first four digits (of 15, padded).
const BUCKETS: usize = 10_000;
const BUCKET_WIDTH: u64 = 10u64.pow(WIDTH - 4);
/// Entries of [`Tables::slots`]: the buckets, rounded up to a power of two.
const SLOT_INDEX: usize = BUCKETS.next_power_of_two();
/// Most slots ([`Tables::slots`]) the data may have: a power of two, so that arrays by slot
/// (a schedule's frame) are indexed by a mask without a bounds check.
pub(super) const MAX_SLOTS: usize = 1024;
/// Sub-buckets of a split bucket: its numbers' next three digits.
const SUB_BUCKETS: usize = 1_000;
const SUB_BUCKET_WIDTH: u64 = BUCKET_WIDTH / SUB_BUCKETS as u64;
/// A number padded with zeros to [`WIDTH`] digits. The digit count comes from the bit
/// length (log10(2) ≈ 1233 / 4096) and one compare: no loop, no branch.
#[inline]
fn pad(value: u64) -> u64 {
    let bits = 64 - value.leading_zeros();
    let guess = (bits * 1233) >> 12;
    let digits = (guess + u32::from(value >= POW10[guess as usize])).clamp(1, WIDTH);
    value * POW10[(WIDTH - digits) as usize]
}

/// A division by a power of ten as a multiply-high and a shift: exact for every dividend
/// below 2^63 (`multiplier` = ceil(2^(64 + shift) / 10^k), `shift` = floor(log2 10^k)).
#[derive(Clone, Copy)]
struct DivideByPow10 {
    multiplier: u64,
    shift: u32,
}

impl DivideByPow10 {
    const fn new(k: u32) -> DivideByPow10 {
        let divisor = 10u64.pow(k);
        let shift = 63 - divisor.leading_zeros();
        let numerator = 1u128 << (64 + shift);
        let multiplier = numerator.div_ceil(divisor as u128);
        DivideByPow10 {
            multiplier: multiplier as u64,
            shift,
        }
    }

    #[inline]
    fn apply(self, value: u64) -> u64 {
        ((u128::from(value) * u128::from(self.multiplier)) >> 64) as u64 >> self.shift
    }
}

/// For numbers of one bit length (by leading zeros): the value from which they have one digit
/// more, and the division that leaves the first four digits below and from it.
#[derive(Clone, Copy)]
struct ByBitLength {
    more_digits_from: u64,
    below: DivideByPow10,
    from: DivideByPow10,
}

const fn digit_count(value: u64) -> u32 {
    match value.checked_ilog10() {
        Some(log) => log + 1,
        None => 1,
    }
}

/// The division of a `digits`-long number that leaves its first four digits. Lengths outside
/// E.164's 8..=15 (no [`Number`] has them) get a neighbour's, which keeps them in bounds.
const fn first_four_digits(digits: u32) -> DivideByPow10 {
    let digits = if digits < 8 {
        8
    } else if digits > WIDTH {
        WIDTH
    } else {
        digits
    };
    DivideByPow10::new(digits - 4)
}

/// [`ByBitLength`] by a value's leading-zero count (0..=64).
const BY_LEADING_ZEROS: [ByBitLength; 65] = {
    let mut table = [ByBitLength {
        more_digits_from: 0,
        below: DivideByPow10::new(4),
        from: DivideByPow10::new(4),
    }; 65];
    let mut zeros = 0;
    while zeros <= 64 {
        let bits = 64 - zeros as u32;
        let (low, high) = match bits {
            0 => (0, 0),
            64 => (1 << 63, u64::MAX),
            _ => (1u64 << (bits - 1), (1u64 << bits) - 1),
        };
        // A doubling crosses at most one power of ten.
        let (short, long) = (digit_count(low), digit_count(high));
        table[zeros] = ByBitLength {
            more_digits_from: if long > short { 10u64.pow(long - 1) } else { 0 },
            below: first_four_digits(short),
            from: first_four_digits(long),
        };
        zeros += 1;
    }
    table
};

/// The first-digits bucket of a number, the same as [`bucket_of`] of [`pad`] for every
/// E.164 length (other values may give any bucket, even past the last: mask it), in a short chain of dependent steps (a batch is bound by that chain's
/// latency): a leading-zero count, one table read, a select, a multiply-high and a shift.
#[inline]
fn bucket_of_value(value: u64) -> usize {
    let by_length = &BY_LEADING_ZEROS[value.leading_zeros() as usize];
    let divide = if value >= by_length.more_digits_from {
        by_length.from
    } else {
        by_length.below
    };
    divide.apply(value) as usize
}

/// The first-digits bucket of a padded number.
#[inline]
fn bucket_of(padded: u64) -> usize {
    ((padded / BUCKET_WIDTH) as usize).min(BUCKETS - 1)
}

/// Index of a place in [`Tables::places`].
pub type PlaceId = u16;

/// Where a prefix's numbers are: country, US state (when known), candidate time zones.
#[derive(Debug)]
pub struct Place {
    pub country: [u8; 2],
    pub state: Option<[u8; 2]>,
    pub zones: Vec<TimeZone>,
}

/// The parsed tables.
#[derive(Debug)]
pub struct Tables {
    pub places: Vec<Place>,
    starts: Vec<u64>,
    ids: Vec<u16>,
    /// `first[b]`: how many ranges start at or before bucket `b`'s first number.
    first: Vec<u16>,
    /// By bucket: the place when one range covers all of bucket `b` (most area codes), else
    /// the "no place" or "search the bucket" slot ([`Tables::slot`]); padded to a power of
    /// two so a masked index needs no bounds check.
    slots: Box<[u16; SLOT_INDEX]>,
    /// For a [`SPLIT`] bucket: its rank among them (`split_rank[b] * SUB_BUCKETS` is where
    /// its entries in `sub` start). Read only for numbers of split buckets.
    split_rank: Vec<u16>,
    /// The same as `slots` (place ids, NO_PLACE or SPLIT), one level down, for split buckets only: by the next three digits
    /// (for a NANP number, its exchange), so most numbers of an area code split between time
    /// zones need one more read rather than a binary search.
    sub: Vec<u16>,
    /// (region, year) → sorted days as month * 100 + day.
    holidays: HashMap<(String, i16), Vec<u16>>,
    /// Zones of every place of a US state (a state hint without a zone).
    state_zones: HashMap<[u8; 2], Vec<TimeZone>>,
}

/// The tables, parsed on first use. The data is checked in and parsed by a unit test, so a
/// failure here is a build defect: it panics with the line, once, at the first use (the
/// daemon touches it while compiling the policy, before binding any port).
pub fn tables() -> &'static Tables {
    static TABLES: LazyLock<Tables> =
        LazyLock::new(|| Tables::parse(LOCATIONS, HOLIDAYS).expect("embedded rules data"));
    &TABLES
}

fn code(text: &str) -> Result<[u8; 2], String> {
    <[u8; 2]>::try_from(text.as_bytes()).map_err(|_| format!("'{text}' is not a 2-letter code"))
}

impl Tables {
    pub fn parse(locations: &str, holidays: &str) -> Result<Tables, String> {
        let mut zones: Vec<TimeZone> = Vec::new();
        let mut places = Vec::new();
        let mut starts = Vec::new();
        let mut ids = Vec::new();
        for (index, line) in locations.lines().enumerate() {
            let fail = |reason: String| format!("locations.txt line {}: {reason}", index + 1);
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["zone", id, name] => {
                    if id.parse::<usize>() != Ok(zones.len()) {
                        return Err(fail("zone ids must count up from 0".into()));
                    }
                    zones.push(TimeZone::get(name).map_err(|e| fail(format!("zone {name}: {e}")))?);
                }
                ["place", id, country, state, list] => {
                    if id.parse::<usize>() != Ok(places.len()) {
                        return Err(fail("place ids must count up from 0".into()));
                    }
                    let mut place_zones = Vec::new();
                    for z in list.split(',') {
                        let z: usize = z.parse().map_err(|_| fail(format!("zone id '{z}'")))?;
                        place_zones.push(
                            zones
                                .get(z)
                                .cloned()
                                .ok_or_else(|| fail("zone id".into()))?,
                        );
                    }
                    places.push(Place {
                        country: code(country).map_err(fail)?,
                        state: if state == "-" {
                            None
                        } else {
                            Some(code(state).map_err(fail)?)
                        },
                        zones: place_zones,
                    });
                }
                [start, place] => {
                    if start.len() > WIDTH as usize || !start.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(fail(format!("range start '{start}'")));
                    }
                    let value: u64 = start.parse().map_err(|_| fail("range start".into()))?;
                    let value = value * 10u64.pow(WIDTH - start.len() as u32);
                    if starts.last().is_some_and(|&last| last >= value) {
                        return Err(fail("range starts must increase".into()));
                    }
                    let id = if place == "-" {
                        NO_PLACE
                    } else {
                        let id: u16 = place.parse().map_err(|_| fail("place id".into()))?;
                        if usize::from(id) >= places.len() {
                            return Err(fail(format!("place {id} not defined")));
                        }
                        id
                    };
                    starts.push(value);
                    ids.push(id);
                }
                _ => return Err(fail("not a zone, place or range line".into())),
            }
        }
        if starts.len() >= usize::from(u16::MAX) {
            return Err("locations.txt: too many ranges for the u16 index".into());
        }
        let first: Vec<u16> = (0..=BUCKETS as u64)
            .map(|b| starts.partition_point(|&s| s <= b * BUCKET_WIDTH) as u16)
            .collect();
        if places.len() + 2 > MAX_SLOTS {
            return Err(format!(
                "locations.txt: {} places, more than the {} slots answer arrays hold",
                places.len(),
                MAX_SLOTS - 2
            ));
        }
        // The place of the numbers [start, start + width) when one range covers them all
        // (no range starts after `start` and before the end), else SPLIT.
        let covering = |start: u64, width: u64| {
            let lo = starts.partition_point(|&s| s <= start);
            if starts.get(lo).is_some_and(|&s| s < start + width) {
                SPLIT
            } else {
                lo.checked_sub(1).map_or(NO_PLACE, |i| ids[i])
            }
        };
        let whole: Vec<u16> = (0..BUCKETS as u64)
            .map(|b| covering(b * BUCKET_WIDTH, BUCKET_WIDTH))
            .collect();
        // Slots: a place's id, then "no place", then "search the bucket"; buckets past the
        // last (no E.164 number has one) have no place.
        let no_place_slot = places.len() as u16;
        let mut slots = Box::new([no_place_slot; SLOT_INDEX]);
        for (slot, &entry) in slots.iter_mut().zip(&whole) {
            *slot = match entry {
                NO_PLACE => no_place_slot,
                SPLIT => no_place_slot + 1,
                id => id,
            };
        }
        let mut split_rank = vec![0u16; BUCKETS];
        let mut sub = Vec::new();
        for (bucket, _) in whole.iter().enumerate().filter(|(_, w)| **w == SPLIT) {
            split_rank[bucket] = (sub.len() / SUB_BUCKETS) as u16;
            let start = bucket as u64 * BUCKET_WIDTH;
            sub.extend(
                (0..SUB_BUCKETS as u64)
                    .map(|s| covering(start + s * SUB_BUCKET_WIDTH, SUB_BUCKET_WIDTH)),
            );
        }
        let mut state_zones: HashMap<[u8; 2], Vec<TimeZone>> = HashMap::new();
        for place in &places {
            if let (b"US", Some(state)) = (&place.country, place.state) {
                let list = state_zones.entry(state).or_default();
                for zone in &place.zones {
                    if !list.contains(zone) {
                        list.push(zone.clone());
                    }
                }
            }
        }
        let mut days = HashMap::new();
        for (index, line) in holidays.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let fail = || format!("holidays.txt line {}: 'REGION YEAR MMDD...'", index + 1);
            let mut fields = line.split(' ');
            let region = fields.next().ok_or_else(fail)?.to_owned();
            let year: i16 = fields
                .next()
                .and_then(|y| y.parse().ok())
                .ok_or_else(fail)?;
            let mut list = fields
                .map(|d| d.parse::<u16>().map_err(|_| fail()))
                .collect::<Result<Vec<u16>, String>>()?;
            list.sort_unstable();
            days.insert((region, year), list);
        }
        Ok(Tables {
            places,
            starts,
            ids,
            first,
            slots,
            split_rank,
            sub,
            holidays: days,
            state_zones,
        })
    }

    /// The place of a number: the longest prefix the data knows (NPA-NXX, then NPA, then the
    /// country), or `None`.
    #[inline]
    pub fn place_of(&self, number: Number) -> Option<PlaceId> {
        self.place_of_padded(pad(number.get()))
    }

    /// [`Tables::place_of`] for a number padded with zeros to 15 digits.
    #[inline]
    fn place_of_padded(&self, padded: u64) -> Option<PlaceId> {
        let slot = self.slots[bucket_of(padded)];
        match usize::from(slot).checked_sub(self.places.len()) {
            None => Some(slot),
            Some(0) => None,
            Some(_) => self.place_in_split_bucket(padded),
        }
    }

    /// The first-digits index entry of a number ([`Tables::slot`]): its place when one range
    /// covers its whole bucket, else a slot for "no place" or for "search the bucket"
    /// ([`Tables::place_of`] then answers). No branch: batches spread over every area code
    /// would mispredict the three-way choice on every other number.
    #[inline]
    pub(super) fn slot(&self, number: Number) -> usize {
        self.slot_of_value(number.get())
    }

    #[inline]
    fn slot_of_value(&self, value: u64) -> usize {
        // Every E.164 number's bucket is below BUCKETS, so the mask changes nothing for them;
        // it only lets the compiler drop the bounds check.
        usize::from(self.slots[bucket_of_value(value) & (SLOT_INDEX - 1)])
    }

    /// Slots of [`Tables::slot`]: one per place, then "no place", then "search the bucket".
    pub(super) fn slots(&self) -> usize {
        self.places.len() + 2
    }

    /// The slot of a place (`None`: no place).
    pub(super) fn slot_of_place(&self, place: Option<PlaceId>) -> usize {
        place.map_or(self.places.len(), usize::from)
    }

    /// The slot [`Tables::slot`] gives numbers whose bucket must be searched.
    #[cfg(test)]
    pub(super) fn split_slot(&self) -> usize {
        self.places.len() + 1
    }

    /// The slot of a number whose bucket holds range starts (the "search the bucket" slot of
    /// [`Tables::slot`]): one read of the second level, a search only in the rare sub-bucket
    /// that holds range starts too.
    #[inline]
    pub(super) fn slot_in_split_bucket(&self, number: Number) -> usize {
        let padded = pad(number.get());
        let sub_bucket = ((padded / SUB_BUCKET_WIDTH) as usize) % SUB_BUCKETS;
        let rank = usize::from(self.split_rank[bucket_of(padded)]);
        match self.sub.get(rank * SUB_BUCKETS + sub_bucket).copied() {
            Some(SPLIT) | None => self.slot_of_place(self.place_in_split_bucket(padded)),
            Some(NO_PLACE) => self.places.len(),
            Some(id) => usize::from(id),
        }
    }

    /// A number padded with zeros to 15 digits is in a bucket holding range starts: the range
    /// that starts at or before it.
    #[cold]
    fn place_in_split_bucket(&self, padded: u64) -> Option<PlaceId> {
        let bucket = bucket_of(padded);
        let sub_bucket = ((padded / SUB_BUCKET_WIDTH) as usize) % SUB_BUCKETS;
        let rank = usize::from(self.split_rank[bucket]);
        match self.sub.get(rank * SUB_BUCKETS + sub_bucket).copied() {
            Some(SPLIT) | None => {}
            Some(NO_PLACE) => return None,
            Some(id) => return Some(id),
        }
        // Ranges starting inside the number's bucket are searched; the one that starts at or
        // before the bucket's first number is `first[b] - 1`.
        let (lo, hi) = (
            usize::from(self.first[bucket]),
            usize::from(self.first[bucket + 1]),
        );
        let after = lo + self.starts[lo..hi].partition_point(|&start| start <= padded);
        let id = *self.ids.get(after.checked_sub(1)?)?;
        (id != NO_PLACE).then_some(id)
    }

    pub fn place(&self, id: PlaceId) -> &Place {
        &self.places[usize::from(id)]
    }

    /// Every zone of a US state's numbers, `None` for a code the data does not know.
    pub fn state_zones(&self, state: [u8; 2]) -> Option<&[TimeZone]> {
        self.state_zones.get(&state).map(Vec::as_slice)
    }

    /// Whether `region` has a holiday on the date; `None` when the data does not cover the
    /// year (the caller fails closed).
    pub fn is_holiday(&self, region: &str, year: i16, month: i8, day: i8) -> Option<bool> {
        let days = self.holidays.get(&(region.to_owned(), year))?;
        let key = month as u16 * 100 + day as u16;
        Some(days.binary_search(&key).is_ok())
    }

    /// Bytes of the in-memory prefix table (starts, ids and the bucket indexes).
    pub fn range_bytes(&self) -> usize {
        self.starts.len() * 8
            + (self.ids.len()
                + self.first.len()
                + self.slots.len()
                + self.split_rank.len()
                + self.sub.len())
                * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(number: &str) -> Option<&'static Place> {
        let t = tables();
        t.place_of(Number::parse_e164(number).unwrap())
            .map(|id| t.place(id))
    }

    fn zone_names(p: &Place) -> Vec<&str> {
        let mut names: Vec<&str> = p.zones.iter().filter_map(|z| z.iana_name()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn embedded_data_parses_and_is_compact() {
        let t = tables();
        assert!(t.places.len() > 300 && t.places.len() < u16::MAX as usize);
        // The figure ARCHITECTURE.md and the module doc state.
        assert!(t.range_bytes() < 330_000, "{}", t.range_bytes());
        eprintln!("prefix table: {} bytes", t.range_bytes());
    }

    #[test]
    fn prefixes_resolve_longest_first() {
        // Miami: Florida, Eastern.
        let miami = place("+13055550123").unwrap();
        assert_eq!((&miami.country, miami.state), (b"US", Some(*b"FL")));
        assert_eq!(zone_names(miami), ["America/New_York"]);
        // 208 (Idaho) spans two zones: an exchange the data places resolves to one zone...
        let boise = place("+12082010000").unwrap();
        assert_eq!(zone_names(boise), ["America/Denver"]);
        assert_eq!(boise.state, Some(*b"ID"));
        // ...an exchange it does not place resolves to every zone of the area code.
        let unknown_exchange = place("+12080000000").unwrap();
        assert!(
            zone_names(unknown_exchange).len() >= 2,
            "{:?}",
            zone_names(unknown_exchange)
        );
        // Paris.
        let paris = place("+33142000000").unwrap();
        assert_eq!(
            (&paris.country, zone_names(paris)),
            (b"FR", vec!["Europe/Paris"])
        );
        // A US number of no geographic area code: the country, every US zone.
        let toll_free = place("+18005550123").unwrap();
        assert_eq!((&toll_free.country, toll_free.state), (b"US", None));
        assert!(zone_names(toll_free).contains(&"Pacific/Honolulu"));
    }

    /// The place of a padded number by a binary search over every range: the oracle.
    fn full_search(t: &Tables, padded: u64) -> Option<PlaceId> {
        let after = t.starts.partition_point(|&s| s <= padded);
        after
            .checked_sub(1)
            .map(|i| t.ids[i])
            .filter(|&id| id != NO_PLACE)
    }

    #[test]
    fn the_bucket_index_finds_what_a_full_binary_search_finds() {
        let t = tables();
        let full = |padded: u64| full_search(t, padded);
        // Every range start, the number just before it, and numbers of every length.
        let mut probes: Vec<u64> = t
            .starts
            .iter()
            .flat_map(|&s| [s, s.saturating_sub(1)])
            .collect();
        probes.extend([
            0,
            10u64.pow(WIDTH) - 1,
            120_800_000_000_000,
            120_820_100_000_000,
        ]);
        for padded in probes {
            assert_eq!(t.place_of_padded(padded), full(padded), "{padded}");
        }
    }

    #[test]
    fn padding_counts_digits_like_ilog10_at_every_length() {
        let slow = |value: u64| {
            let digits = value.checked_ilog10().map_or(1, |d| d + 1).min(WIDTH);
            value * POW10[(WIDTH - digits) as usize]
        };
        for digits in 1..=15u32 {
            let low = 10u64.pow(digits - 1);
            let high = 10u64.pow(digits) - 1;
            for value in [low, low + 1, low * 2 - 1, high / 3, high - 1, high] {
                assert_eq!(pad(value), slow(value), "{value}");
            }
        }
    }

    #[test]
    fn the_short_bucket_chain_agrees_with_padding_at_every_e164_length() {
        // Every length's first and last values, each power of ten's neighbours, and
        // multiples of the divisor's neighbours (where a bucket changes).
        let mut probes = Vec::new();
        for digits in 8..=15u32 {
            let (low, high) = (10u64.pow(digits - 1), 10u64.pow(digits) - 1);
            let step = 10u64.pow(digits - 4);
            probes.extend([low, low + 1, high - 1, high]);
            for bucket in (1000..10_000).step_by(7) {
                let edge = bucket * step;
                probes.extend([edge - 1, edge, edge + 1]);
            }
        }
        let mut state = 2026u64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            probes.push(10_000_000 + (state >> 11) % (10u64.pow(15) - 10_000_000));
        }
        for value in probes
            .into_iter()
            .filter(|&v| (10_000_000..10u64.pow(15)).contains(&v))
        {
            assert_eq!(bucket_of_value(value), bucket_of(pad(value)), "{value}");
        }
        // Values no Number has still get a slot.
        let t = tables();
        for value in [0, 1, 9_999_999, 10u64.pow(15), u64::MAX] {
            assert!(t.slot_of_value(value) < t.slots());
        }
    }

    #[test]
    fn slots_agree_with_place_of() {
        // A whole bucket's slot is its place's, a bucket without places has the "no place"
        // slot, and only buckets holding range starts send numbers to the search.
        let t = tables();
        let mut searched = 0;
        for bucket in 0..BUCKETS as u64 {
            for offset in [0, BUCKET_WIDTH / 2, BUCKET_WIDTH - 1] {
                let padded = bucket * BUCKET_WIDTH + offset;
                let slot = usize::from(t.slots[bucket_of(padded)]);
                if slot == t.split_slot() {
                    searched += 1;
                } else {
                    assert_eq!(slot, t.slot_of_place(full_search(t, padded)), "{bucket}");
                }
                assert_eq!(
                    t.place_of_padded(padded),
                    full_search(t, padded),
                    "{bucket}"
                );
            }
        }
        assert!(searched > 0 && searched < 3 * BUCKETS / 10, "{searched}");
    }

    #[test]
    fn state_zones_and_holidays() {
        let t = tables();
        let florida = t.state_zones(*b"FL").unwrap();
        let names: Vec<&str> = florida.iter().filter_map(|z| z.iana_name()).collect();
        assert!(names.contains(&"America/New_York") && names.contains(&"America/Chicago"));
        assert_eq!(t.is_holiday("US-AL", 2026, 12, 25), Some(true));
        assert_eq!(t.is_holiday("US-AL", 2026, 12, 22), Some(false));
        assert_eq!(t.is_holiday("FR", 2026, 5, 1), Some(true));
        assert_eq!(t.is_holiday("FR", 2040, 5, 1), None);
    }

    #[test]
    fn bad_data_is_refused_with_its_line() {
        let err = Tables::parse("zone 0 Not/AZone\n", "").unwrap_err();
        assert!(
            err.starts_with("locations.txt line 1: zone Not/AZone"),
            "{err}"
        );
        let err = Tables::parse("zone 0 UTC\nplace 0 US - 0\n2 0\n1 0\n", "").unwrap_err();
        assert!(err.contains("line 4: range starts must increase"), "{err}");
        let err = Tables::parse("1 3\n", "").unwrap_err();
        assert!(err.contains("place 3 not defined"), "{err}");
    }
}
