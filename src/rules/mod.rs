//! Calling windows: may this number be called at this instant, and if not, when?
//!
//! Owns the rule packs (`data/*.pack`: versioned, each row citing its source, embedded),
//! custom windows from config, where a called party is (request hints: time zone, US ZIP code
//! (`zips.rs`), state; then the generated prefix table: NPA-NXX, NPA, country; `table.rs`), and the evaluation (`eval.rs`): a call is
//! allowed only if it is allowed in every candidate time zone under every pack that applies,
//! and `next_allowed_at` is the earliest instant allowed by all of them.
//!
//! Pure: no tokio, no proto, no I/O (its data is embedded at build time; time-zone rules come
//! from jiff's bundled tzdb). Never reads the clock: callers pass the instant.

pub mod attempts;
mod eval;
mod held;
mod pack;
mod table;
mod zips;

pub use eval::{Answer, HORIZON_DAYS};
pub use pack::{Pack, PackError};
pub use table::{PlaceId, tables};

use crate::engine::number::Number;
use arc_swap::ArcSwapOption;
use held::HeldAnswer;
use jiff::tz::TimeZone;
use pack::{Scope, Week};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

/// The packs this build embeds, by name.
const BUILTIN: [(&str, &str); 3] = [
    ("us-federal", include_str!("data/us-federal.pack")),
    ("us-states", include_str!("data/us-states.pack")),
    ("fr", include_str!("data/fr.pack")),
];

/// The embedded packs, parsed on first use (a unit test parses them, so this cannot fail in a
/// tested build).
pub fn builtin_packs() -> &'static [Pack] {
    static PACKS: LazyLock<Vec<Pack>> = LazyLock::new(|| {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                let pack = Pack::parse(name, text).expect("embedded pack");
                assert_eq!(pack.name, *name, "pack file name");
                pack
            })
            .collect()
    });
    &PACKS
}

/// Names of the embedded packs (what a campaign's `calling_windows` may name).
pub fn pack_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// Why a campaign's windows are not usable (a config error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown calling-window pack '{0}' (this build has: {known})", known = pack_names().collect::<Vec<_>>().join(", "))]
    UnknownPack(String),
    #[error(transparent)]
    Custom(#[from] PackError),
}

/// Where the caller says the called party is (a dialer often knows the contact's address).
#[derive(Clone, Debug, Default)]
pub struct Hints {
    pub time_zone: Option<TimeZone>,
    /// A US state (USPS code).
    pub state: Option<[u8; 2]>,
}

/// A hint that cannot be used: the request is refused rather than the hint ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("unknown time zone '{0}' (an IANA name, e.g. America/New_York)")]
    TimeZone(String),
    #[error("unknown US state '{0}' (a two-letter USPS code, e.g. FL)")]
    State(String),
    #[error(
        "unknown US postal code '{0}' (a ZIP code the data lists: 5 digits, e.g. 33101 or 33101-1234)"
    )]
    PostalCode(String),
    #[error("US postal code '{postal_code}' is in {found}, not in the state hinted ({hinted})")]
    PostalCodeState {
        postal_code: String,
        found: String,
        hinted: String,
    },
}

impl Hints {
    /// Hints from request fields; empty fields are absent. A US ZIP code gives its state and
    /// time zone: a time-zone hint still wins over its zone, and a state hint must agree.
    pub fn parse(time_zone: &str, state: &str, postal_code: &str) -> Result<Hints, HintError> {
        let clip = |s: &str| s.chars().take(64).collect::<String>();
        let mut time_zone = match time_zone {
            "" => None,
            name => Some(TimeZone::get(name).map_err(|_| HintError::TimeZone(clip(name)))?),
        };
        let mut state = match state {
            "" => None,
            code => {
                let upper = code.to_ascii_uppercase();
                let found = <[u8; 2]>::try_from(upper.as_bytes())
                    .ok()
                    .filter(|c| tables().state_zones(*c).is_some());
                Some(found.ok_or_else(|| HintError::State(clip(code)))?)
            }
        };
        if !postal_code.is_empty() {
            let (zip_state, zone) = zips::zip5(postal_code)
                .and_then(|zip| zips::zips().find(zip))
                .ok_or_else(|| HintError::PostalCode(clip(postal_code)))?;
            if let Some(hinted) = state.filter(|s| *s != zip_state) {
                return Err(HintError::PostalCodeState {
                    postal_code: clip(postal_code),
                    found: String::from_utf8_lossy(&zip_state).into_owned(),
                    hinted: String::from_utf8_lossy(&hinted).into_owned(),
                });
            }
            state = Some(zip_state);
            time_zone = time_zone.or_else(|| Some(zone.clone()));
        }
        Ok(Hints { time_zone, state })
    }

    pub fn is_empty(&self) -> bool {
        self.time_zone.is_none() && self.state.is_none()
    }
}

/// Hints for each number of a batch: the distinct hints, parsed once, and for each number the
/// index of its hints (a list of contacts mostly repeats a few zones, states and ZIP codes).
#[derive(Clone, Debug, Default)]
pub struct Located {
    pub hints: Vec<Hints>,
    pub of_number: Vec<u32>,
}

impl Located {
    /// Parses `(time_zone, us_state, postal_code)` of each number, each distinct spelling
    /// once; the first hint that cannot be used is refused with its position.
    pub fn parse<'a>(
        each: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Located, (usize, HintError)> {
        let mut seen: HashMap<(&str, &str, &str), u32> = HashMap::new();
        let mut located = Located::default();
        for (index, fields) in each.into_iter().enumerate() {
            let id = match seen.get(&fields) {
                Some(&id) => id,
                None => {
                    let (zone, state, postal) = fields;
                    let hints = Hints::parse(zone, state, postal).map_err(|e| (index, e))?;
                    let id = located.hints.len() as u32;
                    located.hints.push(hints);
                    seen.insert(fields, id);
                    id
                }
            };
            located.of_number.push(id);
        }
        Ok(located)
    }
}

/// A campaign's calling windows: the packs it names and its custom windows.
#[derive(Debug)]
pub struct Schedule {
    packs: Vec<&'static Pack>,
    custom: Option<Pack>,
    /// "us-federal 2026.1, us-states 2026.1": the versions an answer was computed with.
    pub versions: String,
    /// Per place of the prefix table, the last answer computed and the instants it holds
    /// for. An answer holds over an interval (until the window closes, or until the next
    /// opening), so checks of the same place reuse it: a few atomic loads and two compares
    /// (`held.rs`, a sequence lock) instead of a time-zone evaluation.
    answers: Box<[HeldAnswer]>,
    /// Every place's answer at once over one interval: what batches start from.
    frame: ArcSwapOption<Frame>,
    /// A batch is building the next frame (the others take the per-place path meanwhile).
    framing: AtomicBool,
}

/// The smallest batch that builds a frame when none holds at its instant (about a quarter of
/// the places: smaller ones take the per-place path).
const MIN_BATCH_TO_FRAME: usize = 100;

/// Every slot's answer code ([`Tables::slot`]) over the instants `[from, until)` where none
/// of them changes. A batch copies it (a few kilobytes) and then reads one word per number,
/// with no per-place fills; the "search the bucket" slot stays empty, so those numbers
/// take the per-place path.
#[derive(Debug)]
struct Frame {
    from: i64,
    until: i64,
    /// By slot; entries past `tables().slots()` stay empty (a power of two, so a masked index
    /// needs no bounds check).
    codes: Box<[i64; FRAME_SLOTS]>,
}

/// Entries of a frame: the slots of the prefix table, rounded up to a power of two (the
/// table's parse refuses more places than fit).
const FRAME_SLOTS: usize = table::MAX_SLOTS;

impl Schedule {
    /// The schedule of `campaign` from its config: pack names and custom rows.
    pub fn new(
        campaign: &str,
        packs: &[String],
        custom: &[String],
    ) -> Result<Schedule, ScheduleError> {
        let mut found = Vec::new();
        for name in packs {
            let pack = builtin_packs()
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| ScheduleError::UnknownPack(name.chars().take(64).collect()))?;
            found.push(pack);
        }
        let custom = if custom.is_empty() {
            None
        } else {
            Some(Pack::custom(campaign, custom)?)
        };
        let mut versions: Vec<String> = found
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        if custom.is_some() {
            versions.push("custom".into());
        }
        Ok(Schedule {
            packs: found,
            custom,
            versions: versions.join(", "),
            answers: (0..tables().places.len())
                .map(|_| HeldAnswer::default())
                .collect(),
            frame: ArcSwapOption::empty(),
            framing: AtomicBool::new(false),
        })
    }

    /// The weeks that apply to a number in `country` and `state`: every `*` scope of a pack of
    /// that country, the state's scope, or every state's scope when the state is not known
    /// (the most restrictive), and the custom windows.
    fn weeks(&self, country: Option<[u8; 2]>, state: Option<[u8; 2]>) -> Vec<&Week> {
        let mut weeks = Vec::new();
        for pack in &self.packs {
            if country.is_none_or(|c| pack.country.as_deref().map(str::as_bytes) != Some(&c[..])) {
                continue;
            }
            for (scope, week) in &pack.scopes {
                let applies = match (scope, state) {
                    (Scope::All, _) => true,
                    (Scope::State(s), Some(state)) => s.as_bytes() == state,
                    (Scope::State(_), None) => true,
                };
                if applies {
                    weeks.push(week);
                }
            }
        }
        if let Some(custom) = &self.custom {
            weeks.extend(custom.scopes.iter().map(|(_, w)| w));
        }
        weeks
    }

    /// The answer for a call at `at_ms` to the numbers of a place of the prefix table
    /// (`None`: no place known). Depends only on the place and the instant, so a batch asks
    /// once per place and instant.
    pub fn check_place(&self, place: Option<PlaceId>, at_ms: i64) -> Answer {
        self.place_span(place, at_ms).0
    }

    /// [`Schedule::check_place`] with the instants `[from, until)` the answer holds for.
    fn place_span(&self, place: Option<PlaceId>, at_ms: i64) -> (Answer, i64, i64) {
        let Some(id) = place else {
            return (Answer::UnknownLocation, i64::MIN, i64::MAX);
        };
        let slot = &self.answers[usize::from(id)];
        if let Some(span) = slot.span(at_ms) {
            return span;
        }
        let place = tables().place(id);
        let weeks = self.weeks(Some(place.country), place.state);
        let (answer, until) = eval::evaluate(&place.zones, &weeks, at_ms);
        slot.set(at_ms, until, answer);
        (answer, at_ms, until)
    }

    /// The frame that holds at `at_ms`, built now if none does and no other batch is building
    /// one (then `None`: the caller takes the per-place path). Instants from a request that
    /// checks ahead replace the frame like the clock's do; the cost of that back and forth is
    /// one held-answer read per place, what a batch paid before frames.
    fn frame_at(&self, at_ms: i64, numbers: usize) -> Option<Arc<Frame>> {
        let current = self.frame.load_full();
        if let Some(frame) = &current
            && frame.from <= at_ms
            && at_ms < frame.until
        {
            return current;
        }
        // A frame costs an answer for every place: worth it for a batch that may touch many
        // of them, not for a few numbers asked at an instant of their own.
        if numbers < MIN_BATCH_TO_FRAME {
            return None;
        }
        if self
            .framing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let table = tables();
        let mut codes = Box::new([eval::CODE_NONE; FRAME_SLOTS]);
        let (mut from, mut until) = (i64::MIN, i64::MAX);
        let places = (0..table.places.len()).map(|id| Some(id as PlaceId));
        for place in places.chain([None]) {
            let (answer, held_from, held_until) = self.place_span(place, at_ms);
            codes[table.slot_of_place(place)] = answer.code();
            from = from.max(held_from);
            until = until.min(held_until);
        }
        let frame = Arc::new(Frame { from, until, codes });
        self.frame.store(Some(frame.clone()));
        self.framing.store(false, Ordering::Release);
        Some(frame)
    }

    /// The answer for a call at `at_ms` to `number`, with the caller's hints: the zone from a
    /// time-zone hint, else a state hint's zones, else the number's place; the state from the
    /// hint, else the place; the country from the place (a state hint means the US).
    pub fn check(&self, number: Number, hints: &Hints, at_ms: i64) -> Answer {
        let place_id = tables().place_of(number);
        if hints.is_empty() {
            return self.check_place(place_id, at_ms);
        }
        let place = place_id.map(|id| tables().place(id));
        let country = match hints.state {
            Some(_) => Some(*b"US"),
            None => place.map(|p| p.country),
        };
        let state = hints.state.or(place.and_then(|p| p.state));
        let hinted_zone;
        let zones: &[TimeZone] = match (&hints.time_zone, hints.state) {
            (Some(zone), _) => {
                hinted_zone = [zone.clone()];
                &hinted_zone
            }
            (None, Some(state)) => tables().state_zones(state).unwrap_or(&[]),
            (None, None) => place.map_or(&[], |p| &p.zones[..]),
        };
        if country.is_none() {
            return Answer::UnknownLocation;
        }
        eval::evaluate(zones, &self.weeks(country, state), at_ms).0
    }
}

/// A calling-window answer as one word ([`Answer::code`]), so a batch can turn it into
/// reasons without a branch per number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCode(i64);

impl WindowCode {
    /// OUTSIDE_CALLING_WINDOW.
    #[inline]
    pub fn is_outside(self) -> bool {
        // `&`, not `&&`: no short circuit, so no branch.
        (self.0 != eval::CODE_ALLOWED) & (self.0 != eval::CODE_UNKNOWN)
    }

    /// UNKNOWN_LOCATION.
    #[inline]
    pub fn is_unknown(self) -> bool {
        self.0 == eval::CODE_UNKNOWN
    }

    /// The earliest instant the windows allow, when outside them and one is in the horizon.
    #[inline]
    pub fn next_allowed_at_ms(self) -> Option<i64> {
        (self.0 > eval::CODE_NONE).then_some(self.0)
    }
}

impl From<Answer> for WindowCode {
    fn from(answer: Answer) -> WindowCode {
        WindowCode(answer.code())
    }
}

/// Answers of one batch instant per place: the schedule's frame when one holds at that
/// instant (every place's answer already there), else filled per place on first use. A
/// number costs the first-digits index read and one word, whatever the packs.
#[derive(Debug)]
pub struct PlaceCache {
    tables: &'static table::Tables,
    at_ms: i64,
    frame: Option<Arc<Frame>>,
    /// Without a frame: answers by [`Tables::slot`], filled on first use (the "search the
    /// bucket" slot always empty).
    own: Vec<i64>,
    /// Numbers with hints of their own ([`Located`]): answers by (hints, place).
    hinted: HashMap<(u32, Option<PlaceId>), Answer>,
}

impl Frame {
    #[inline]
    fn code(&self, tables: &table::Tables, number: Number) -> WindowCode {
        match self.codes[tables.slot(number)] {
            eval::CODE_NONE => self.searched(tables, number),
            code => WindowCode(code),
        }
    }

    /// A number whose bucket holds range starts: its place's answer.
    #[inline]
    fn searched(&self, tables: &table::Tables, number: Number) -> WindowCode {
        WindowCode(self.codes[tables.slot_in_split_bucket(number)])
    }
}

impl PlaceCache {
    /// The cache of a batch of `numbers` checked at `at_ms` against `schedule`.
    pub fn new(schedule: &Schedule, at_ms: i64, numbers: usize) -> PlaceCache {
        let tables = tables();
        let frame = schedule.frame_at(at_ms, numbers);
        PlaceCache {
            tables,
            at_ms,
            own: match frame {
                Some(_) => Vec::new(),
                None => vec![eval::CODE_NONE; tables.slots()],
            },
            frame,
            hinted: HashMap::new(),
        }
    }

    /// A cache that fills every place itself, as when no frame holds.
    #[cfg(test)]
    fn without_frame(at_ms: i64) -> PlaceCache {
        let tables = tables();
        PlaceCache {
            tables,
            at_ms,
            frame: None,
            own: vec![eval::CODE_NONE; tables.slots()],
            hinted: HashMap::new(),
        }
    }

    /// The answer for `number` at the batch's instant.
    #[inline]
    pub fn code(&mut self, schedule: &Schedule, number: Number) -> WindowCode {
        match &self.frame {
            Some(frame) => frame.code(self.tables, number),
            None => self.own_code(schedule, number),
        }
    }

    /// `each(i, code)` for the answer of every `numbers[i]`, in order: one tight loop.
    #[inline]
    pub fn each_code(
        &mut self,
        schedule: &Schedule,
        numbers: &[Number],
        mut each: impl FnMut(usize, WindowCode),
    ) {
        match &self.frame {
            Some(frame) => {
                // Two short loops per chunk instead of one long one: the slots of a chunk
                // are independent table reads the core overlaps many of; a long loop body
                // left it room for two or three numbers at a time.
                const CHUNK: usize = 64;
                let tables = self.tables;
                let codes: &[i64; FRAME_SLOTS] = &frame.codes;
                let mut slots = [0usize; CHUNK];
                let mut found = [WindowCode(0); CHUNK];
                for (chunk_index, chunk) in numbers.chunks(CHUNK).enumerate() {
                    for (slot, &number) in slots.iter_mut().zip(chunk) {
                        *slot = tables.slot(number);
                    }
                    for ((code, &slot), &number) in found.iter_mut().zip(&slots).zip(chunk) {
                        // Slots are below `tables.slots()`, which FRAME_SLOTS exceeds: the
                        // mask only drops the bounds check.
                        *code = match codes[slot & (FRAME_SLOTS - 1)] {
                            eval::CODE_NONE => frame.searched(tables, number),
                            found => WindowCode(found),
                        };
                    }
                    for (offset, &code) in found[..chunk.len()].iter().enumerate() {
                        each(chunk_index * CHUNK + offset, code);
                    }
                }
            }
            None => {
                for (i, &number) in numbers.iter().enumerate() {
                    each(i, self.own_code(schedule, number));
                }
            }
        }
    }

    #[inline]
    fn own_code(&mut self, schedule: &Schedule, number: Number) -> WindowCode {
        match self.own[self.tables.slot(number)] {
            eval::CODE_NONE => self.fill(schedule, number),
            code => WindowCode(code),
        }
    }

    /// [`PlaceCache::code`] as an [`Answer`].
    pub fn check(&mut self, schedule: &Schedule, number: Number) -> Answer {
        Answer::from_code(self.code(schedule, number).0)
    }

    /// The answer for `number` with hints of its own (`id`: their index in the batch's
    /// [`Located`]), once per distinct hints and place in the batch.
    pub fn check_hinted(
        &mut self,
        schedule: &Schedule,
        number: Number,
        id: u32,
        hints: &Hints,
    ) -> WindowCode {
        if hints.is_empty() {
            return self.code(schedule, number);
        }
        let place = self.tables.place_of(number);
        let at_ms = self.at_ms;
        WindowCode::from(
            *self
                .hinted
                .entry((id, place))
                .or_insert_with(|| schedule.check(number, hints, at_ms)),
        )
    }

    /// A number whose place has no answer yet in this batch (or whose bucket must be
    /// searched): the schedule's answer for its place, kept for the rest.
    #[inline(never)]
    fn fill(&mut self, schedule: &Schedule, number: Number) -> WindowCode {
        let place = self.tables.place_of(number);
        let slot = self.tables.slot_of_place(place);
        if self.own[slot] != eval::CODE_NONE {
            return WindowCode(self.own[slot]);
        }
        let code = schedule.check_place(place, self.at_ms).code();
        self.own[slot] = code;
        WindowCode(code)
    }
}

#[cfg(test)]
mod tests;
