//! The generated tables (`data/locations.txt`, `data/holidays.txt`, written by
//! `tools/gen_rules.py`), embedded and parsed once: phone prefix → place (country, US state,
//! time zones) as disjoint ranges, and public holidays per region and year.
//!
//! In memory the prefix table is two arrays (range starts as u64, place ids as u16: about
//! 4 k ranges, 40 KB) and two arrays by a number's first four digits (for NANP numbers, its
//! area code; 20 KB each): the place when one range covers the whole bucket (most area codes:
//! one read), else where the bucket's ranges start, to narrow the binary search to them.

use crate::engine::number::Number;
use jiff::tz::TimeZone;
use std::collections::HashMap;
use std::sync::LazyLock;

const LOCATIONS: &str = include_str!("data/locations.txt");
const HOLIDAYS: &str = include_str!("data/holidays.txt");

/// Digits every number is padded to before a range search (E.164's maximum).
const WIDTH: u32 = 15;
const NO_PLACE: u16 = u16::MAX;
/// In `whole`: the bucket holds range starts, search them.
const SPLIT: u16 = u16::MAX - 1;
/// Buckets of the first-digits index: a number's first four digits (of 15, padded).
const BUCKETS: usize = 10_000;
const BUCKET_WIDTH: u64 = 10u64.pow(WIDTH - 4);
/// `PAD[i]` = 10^i: what a number of `15 - i` digits is multiplied by to pad it.
const PAD: [u64; 16] = {
    let mut pad = [1u64; 16];
    let mut i = 1;
    while i < 16 {
        pad[i] = pad[i - 1] * 10;
        i += 1;
    }
    pad
};

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
    /// `whole[b]`: the place id (or NO_PLACE) when one range covers all of bucket `b` (most
    /// area codes), so the number needs one read; [`SPLIT`] when ranges start inside it.
    whole: Vec<u16>,
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
        if places.len() >= usize::from(SPLIT) {
            return Err("locations.txt: too many places for u16 ids".into());
        }
        let whole = (0..BUCKETS)
            .map(|b| {
                let (lo, hi) = (usize::from(first[b]), usize::from(first[b + 1]));
                // No range starts after the bucket's first number and before the next bucket.
                let end = (b as u64 + 1) * BUCKET_WIDTH;
                if starts[lo..hi].iter().any(|&s| s < end) {
                    SPLIT
                } else {
                    lo.checked_sub(1).map_or(NO_PLACE, |i| ids[i])
                }
            })
            .collect();
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
            whole,
            holidays: days,
            state_zones,
        })
    }

    /// The place of a number: the longest prefix the data knows (NPA-NXX, then NPA, then the
    /// country), or `None`.
    #[inline]
    pub fn place_of(&self, number: Number) -> Option<PlaceId> {
        // ilog10 is a leading-zero count and a table read: no digit loop, no pow loop.
        let value = number.get();
        let digits = value.checked_ilog10().map_or(1, |d| d + 1).min(WIDTH);
        self.place_of_padded(value * PAD[(WIDTH - digits) as usize])
    }

    /// [`Tables::place_of`] for a number padded with zeros to 15 digits.
    #[inline]
    fn place_of_padded(&self, padded: u64) -> Option<PlaceId> {
        // Ranges starting inside the number's bucket are searched; the one that starts at or
        // before the bucket's first number is `first[b] - 1`.
        let bucket = ((padded / BUCKET_WIDTH) as usize).min(BUCKETS - 1);
        match self.whole[bucket] {
            SPLIT => {}
            NO_PLACE => return None,
            id => return Some(id),
        }
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

    /// Bytes of the in-memory prefix table (starts and ids).
    pub fn range_bytes(&self) -> usize {
        self.starts.len() * 8 + self.ids.len() * 2 + (self.first.len() + self.whole.len()) * 2
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
        assert!(t.range_bytes() < 90_000, "{}", t.range_bytes());
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

    #[test]
    fn the_bucket_index_finds_what_a_full_binary_search_finds() {
        let t = tables();
        let full = |padded: u64| {
            let after = t.starts.partition_point(|&s| s <= padded);
            after
                .checked_sub(1)
                .map(|i| t.ids[i])
                .filter(|&id| id != NO_PLACE)
        };
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
