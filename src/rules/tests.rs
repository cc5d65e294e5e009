//! Calling windows at fixed instants around every boundary (DST in spring and fall, a
//! zone-spanning area code, state holidays, Sunday rules, the French lunch break, several
//! packs at once), and the property that `next_allowed_at` is allowed and nothing earlier is.

use super::*;
use jiff::civil::DateTime;
use proptest::prelude::*;

/// Unix ms of a local wall-clock time in `zone` (`2026-03-07T20:30`).
fn local(zone: &str, when: &str) -> i64 {
    let dt: DateTime = when.parse().unwrap();
    dt.to_zoned(TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn schedule(packs: &[&str], custom: &[&str]) -> Schedule {
    let packs: Vec<String> = packs.iter().map(|s| s.to_string()).collect();
    let custom: Vec<String> = custom.iter().map(|s| s.to_string()).collect();
    Schedule::new("test", &packs, &custom).unwrap()
}

fn number(text: &str) -> Number {
    Number::parse_e164(text).unwrap()
}

fn next(ms: i64) -> Answer {
    Answer::Outside {
        next_allowed_at_ms: Some(ms),
    }
}

const NY: &str = "America/New_York";
const CHI: &str = "America/Chicago";
const PARIS: &str = "Europe/Paris";
const FLORIDA: &str = "+13055550123";
const ALABAMA: &str = "+12055550123";
const RHODE_ISLAND: &str = "+14015550123";
const PARIS_NUMBER: &str = "+33142000000";
/// An Idaho number of an exchange the data does not place: Mountain and Pacific candidates.
const IDAHO_SPLIT: &str = "+12080000000";

#[test]
fn embedded_packs_parse_and_every_scope_names_every_day() {
    assert_eq!(builtin_packs().len(), BUILTIN.len());
    for pack in builtin_packs() {
        assert!(!pack.version.is_empty());
        for (scope, week) in &pack.scopes {
            // A day no row names would be closed by omission: the packs name every day.
            assert_eq!(week.covered_days(), 0x7f, "{} {scope}", pack.name);
            if week.holiday.is_some() {
                let region = week.holiday_region.as_deref().unwrap();
                assert_eq!(
                    tables().is_holiday(region, 2026, 1, 1),
                    Some(true),
                    "{region}"
                );
            }
        }
    }
}

#[test]
fn windows_at_fixed_instants() {
    let federal = schedule(&["us-federal"], &[]);
    let states = schedule(&["us-federal", "us-states"], &[]);
    let fr = schedule(&["fr"], &[]);
    let cases: Vec<(&str, &Schedule, &str, i64, Answer)> = vec![
        // Florida: 8:00-20:00 under us-states, 8:00-21:00 federal.
        (
            "fl 07:59:59.999",
            &states,
            FLORIDA,
            local(NY, "2026-06-15T07:59:59.999"),
            next(local(NY, "2026-06-15T08:00")),
        ),
        (
            "fl 08:00",
            &states,
            FLORIDA,
            local(NY, "2026-06-15T08:00"),
            Answer::Allowed,
        ),
        (
            "fl 19:59:59.999",
            &states,
            FLORIDA,
            local(NY, "2026-06-15T19:59:59.999"),
            Answer::Allowed,
        ),
        (
            "fl 20:00",
            &states,
            FLORIDA,
            local(NY, "2026-06-15T20:00"),
            next(local(NY, "2026-06-16T08:00")),
        ),
        // One pack or two: the most restrictive of all named wins.
        (
            "fl 20:30 federal only",
            &federal,
            FLORIDA,
            local(NY, "2026-06-15T20:30"),
            Answer::Allowed,
        ),
        (
            "fl 21:00 federal only",
            &federal,
            FLORIDA,
            local(NY, "2026-06-15T21:00"),
            next(local(NY, "2026-06-16T08:00")),
        ),
        // Spring forward (US, 8 March 2026): the next opening is 8:00 EDT, not EST.
        (
            "dst spring",
            &states,
            FLORIDA,
            local(NY, "2026-03-07T20:30"),
            next(local(NY, "2026-03-08T08:00")),
        ),
        // Fall back (1 November 2026): 8:00 EST.
        (
            "dst fall",
            &states,
            FLORIDA,
            local(NY, "2026-10-31T20:30"),
            next(local(NY, "2026-11-01T08:00")),
        ),
        // Area code 208 spanning Mountain and Pacific: allowed only when both allow.
        (
            "208 8:30 MT = 7:30 PT",
            &federal,
            IDAHO_SPLIT,
            local("America/Boise", "2026-06-15T08:30"),
            next(local("America/Los_Angeles", "2026-06-15T08:00")),
        ),
        (
            "208 9:00 MT",
            &federal,
            IDAHO_SPLIT,
            local("America/Boise", "2026-06-15T09:00"),
            Answer::Allowed,
        ),
        (
            "208 21:00 MT = 20:00 PT",
            &federal,
            IDAHO_SPLIT,
            local("America/Boise", "2026-06-15T21:00"),
            next(local("America/Los_Angeles", "2026-06-16T08:00")),
        ),
        // Alabama: Christmas Day (a Friday) is closed; Sunday too.
        (
            "al christmas",
            &states,
            ALABAMA,
            local(CHI, "2026-12-25T10:00"),
            next(local(CHI, "2026-12-26T08:00")),
        ),
        (
            "al christmas eve 19:59",
            &states,
            ALABAMA,
            local(CHI, "2026-12-24T19:59"),
            Answer::Allowed,
        ),
        (
            "al sunday",
            &states,
            ALABAMA,
            local(CHI, "2026-12-27T12:00"),
            next(local(CHI, "2026-12-28T08:00")),
        ),
        (
            "al sunday, federal only",
            &federal,
            ALABAMA,
            local(CHI, "2026-12-27T12:00"),
            Answer::Allowed,
        ),
        // Rhode Island: Saturday 10-17, closed Sunday, Monday from 9.
        (
            "ri saturday 17:00",
            &states,
            RHODE_ISLAND,
            local(NY, "2026-06-13T17:00"),
            next(local(NY, "2026-06-15T09:00")),
        ),
        (
            "ri saturday 16:59",
            &states,
            RHODE_ISLAND,
            local(NY, "2026-06-13T16:59"),
            Answer::Allowed,
        ),
        // France: the lunch break, evenings, weekends, public holidays.
        (
            "fr 12:59",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-12-07T12:59"),
            Answer::Allowed,
        ),
        (
            "fr 13:00 lunch",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-12-07T13:00"),
            next(local(PARIS, "2026-12-07T14:00")),
        ),
        (
            "fr 09:59",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-12-07T09:59"),
            next(local(PARIS, "2026-12-07T10:00")),
        ),
        (
            "fr friday 20:00",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-12-11T20:00"),
            next(local(PARIS, "2026-12-14T10:00")),
        ),
        (
            "fr christmas friday",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-12-25T11:00"),
            next(local(PARIS, "2026-12-28T10:00")),
        ),
        (
            "fr dst spring (29 March 2026)",
            &fr,
            PARIS_NUMBER,
            local(PARIS, "2026-03-27T20:00"),
            next(local(PARIS, "2026-03-30T10:00")),
        ),
        // Packs of another country leave a number alone.
        (
            "fr number, us packs",
            &states,
            PARIS_NUMBER,
            local(PARIS, "2026-12-07T03:00"),
            Answer::Allowed,
        ),
        (
            "us number, fr pack",
            &fr,
            FLORIDA,
            local(NY, "2026-12-07T03:00"),
            Answer::Allowed,
        ),
        // A number no table entry places.
        (
            "unplaced",
            &federal,
            "+80012345678",
            local(NY, "2026-06-15T12:00"),
            Answer::UnknownLocation,
        ),
    ];
    for (name, schedule, text, at, expected) in cases {
        assert_eq!(
            schedule.check(number(text), &Hints::default(), at),
            expected,
            "{name}"
        );
        // A batch reads the schedule's frame, or asks per place: the same answer.
        let mut framed = PlaceCache::new(schedule, at, 1_000);
        assert_eq!(
            framed.check(schedule, number(text)),
            expected,
            "{name} (batch)"
        );
        let mut per_place = PlaceCache::without_frame(at);
        assert_eq!(
            per_place.check(schedule, number(text)),
            expected,
            "{name} (batch, per place)"
        );
    }
}

#[test]
fn custom_windows_and_hints() {
    let custom = schedule(&["us-federal"], &["mon-fri 09:00-17:00"]);
    // Saturday: custom windows close the weekend.
    assert_eq!(
        custom.check(
            number(FLORIDA),
            &Hints::default(),
            local(NY, "2026-06-13T10:00")
        ),
        next(local(NY, "2026-06-15T09:00"))
    );
    // A custom window that starts in the hour a DST change skips opens when the hour resumes.
    let night = schedule(&[], &["sun 02:30-04:00"]);
    assert_eq!(
        night.check(
            number(FLORIDA),
            &Hints::default(),
            local(NY, "2026-03-08T01:00")
        ),
        next(local(NY, "2026-03-08T03:30"))
    );
    // No window at all: never, within the horizon.
    let never = schedule(&[], &["mon closed"]);
    assert_eq!(
        never.check(
            number(FLORIDA),
            &Hints::default(),
            local(NY, "2026-06-15T12:00")
        ),
        Answer::Outside {
            next_allowed_at_ms: None
        }
    );
    // A time-zone hint replaces the number's zone (a Florida number living in California).
    let states = schedule(&["us-federal", "us-states"], &[]);
    let hints = Hints::parse("America/Los_Angeles", "", "").unwrap();
    let at = local(NY, "2026-06-15T20:30");
    assert_eq!(states.check(number(FLORIDA), &hints, at), Answer::Allowed);
    // A state hint brings that state's rules and zones: a Texas hint on a Sunday morning.
    let hints = Hints::parse("", "tx", "").unwrap();
    assert_eq!(
        states.check(number(FLORIDA), &hints, local(CHI, "2026-06-14T11:00")),
        next(local("America/Denver", "2026-06-14T12:00").max(local(CHI, "2026-06-14T12:00")))
    );
    // Hints name real things or the request is refused.
    assert_eq!(
        Hints::parse("Mars/Olympus", "", "").unwrap_err(),
        HintError::TimeZone("Mars/Olympus".into())
    );
    assert_eq!(
        Hints::parse("", "ZZ", "").unwrap_err(),
        HintError::State("ZZ".into())
    );
}

#[test]
fn a_postal_code_gives_the_state_and_zone() {
    let states = schedule(&["us-federal", "us-states"], &[]);
    let at = local(NY, "2026-06-15T20:30");
    // A Florida number whose contact lives in Beverly Hills: 17:30 there, allowed.
    let beverly_hills = Hints::parse("", "", "90210").unwrap();
    assert_eq!(
        states.check(number(FLORIDA), &beverly_hills, at),
        Answer::Allowed
    );
    // A Californian number whose contact lives in Miami: Florida's 20:00 rule, Eastern time.
    let miami = Hints::parse("", "", "33101-1234").unwrap();
    assert_eq!(
        states.check(number("+12135550123"), &miami, at),
        next(local(NY, "2026-06-16T08:00"))
    );
    // Pensacola is Florida on Central time: 19:30 there, allowed until 20:00.
    let pensacola = Hints::parse("", "FL", "32501").unwrap();
    assert_eq!(
        states.check(number(FLORIDA), &pensacola, at),
        Answer::Allowed
    );
    assert_eq!(
        states.check(number(FLORIDA), &pensacola, local(CHI, "2026-06-15T20:00")),
        next(local(CHI, "2026-06-16T08:00"))
    );
    // A time-zone hint still wins over the postal code's zone; the state rules stay Florida's.
    let hinted = Hints::parse(CHI, "", "33101").unwrap();
    assert_eq!(states.check(number(FLORIDA), &hinted, at), Answer::Allowed);
    // A code the data does not list, or one that contradicts the state hint, is refused.
    assert_eq!(
        Hints::parse("", "", "00000").unwrap_err(),
        HintError::PostalCode("00000".into())
    );
    assert_eq!(
        Hints::parse("", "", "3310").unwrap_err(),
        HintError::PostalCode("3310".into())
    );
    assert_eq!(
        Hints::parse("", "GA", "33101").unwrap_err().to_string(),
        "US postal code '33101' is in FL, not in the state hinted (GA)"
    );
}

#[test]
fn configuration_errors_name_the_problem() {
    let err = Schedule::new("c", &["us-fedral".into()], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown calling-window pack 'us-fedral' (this build has: us-federal, us-states, fr)"
    );
    for (row, reason) in [
        ("mon-fri 9:00-17:00", "'9:00' is not a time"),
        ("fri-mon 09:00-17:00", "days run from mon to sun"),
        ("mon 17:00-09:00", "ends before it starts"),
        ("mon 09:00-12:00,11:00-13:00", "intervals overlap"),
        ("holiday closed", "no holiday calendar"),
        ("every day", "is not a day"),
    ] {
        let err = Schedule::new("c", &[], &[row.into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(reason) && err.contains("campaign 'c'"),
            "{row}: {err}"
        );
    }
    let err = Schedule::new(
        "c",
        &[],
        &["mon 09:00-10:00".into(), "mon-fri 12:00-13:00".into()],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("line 2: a second row for day 0"),
        "{err}"
    );
    let err = Pack::parse("x", "pack x\nversion 1\ncountry US\n* mon 09:00-10:00\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "calling-window pack 'x', line 4: a row needs '| SOURCE'"
    );
}

const NUMBERS: [&str; 6] = [
    FLORIDA,
    ALABAMA,
    RHODE_ISLAND,
    PARIS_NUMBER,
    IDAHO_SPLIT,
    "+14155550123",
];
const PACKS: [&str; 3] = ["us-federal", "us-states", "fr"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// `next_allowed_at` is allowed, and no earlier instant is: checked at every whole minute
    /// from the asked instant, and one millisecond before it.
    #[test]
    fn next_allowed_at_is_the_earliest_allowed_instant(
        // 2025-01-01 .. 2030-12-01, to the millisecond.
        at in 1_735_689_600_000i64..1_922_745_600_000,
        which in 0usize..NUMBERS.len(),
        packs in 1u8..8,
        custom in prop::option::of(Just("mon-sat 09:30-18:15")),
    ) {
        let names: Vec<&str> = (0..3).filter(|i| packs & 1 << i != 0).map(|i| PACKS[i]).collect();
        let custom: Vec<&str> = custom.into_iter().collect();
        let schedule = schedule(&names, &custom);
        let number = number(NUMBERS[which]);
        let answer = schedule.check(number, &Hints::default(), at);
        if let Answer::Outside { next_allowed_at_ms: Some(next) } = answer {
            prop_assert!(next > at);
            prop_assert_eq!(schedule.check(number, &Hints::default(), next), Answer::Allowed);
            prop_assert_ne!(schedule.check(number, &Hints::default(), next - 1), Answer::Allowed);
            let mut minute = at - at.rem_euclid(60_000) + 60_000;
            while minute < next {
                prop_assert_ne!(schedule.check(number, &Hints::default(), minute), Answer::Allowed, "{}", minute);
                minute += 60_000;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// The answers a schedule keeps per place (reused while they hold) are the answers a fresh
    /// evaluation gives, whatever order instants come in.
    #[test]
    fn held_answers_equal_fresh_ones(
        instants in prop::collection::vec(1_780_000_000_000i64..1_782_000_000_000, 1..40),
        which in 0usize..NUMBERS.len(),
    ) {
        let held = schedule(&["us-federal", "us-states", "fr"], &[]);
        let number = number(NUMBERS[which]);
        for at in instants {
            let fresh = schedule(&["us-federal", "us-states", "fr"], &[]);
            prop_assert_eq!(
                held.check(number, &Hints::default(), at),
                fresh.check(number, &Hints::default(), at)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// A batch's answers (read from the schedule's frame while it holds, rebuilt when an
    /// instant falls outside it, in any order) are the answers a fresh evaluation gives, for
    /// numbers of every area code.
    #[test]
    fn frame_answers_equal_fresh_ones(
        start in 1_780_000_000_000i64..1_782_000_000_000,
        // Steps of up to two hours either way: most stay in one frame, some cross its end.
        steps in prop::collection::vec(-7_200_000i64..7_200_000, 1..12),
        area_codes in prop::collection::vec(200u64..1000, 8),
    ) {
        let packs = ["us-federal", "us-states", "fr"];
        let batched = schedule(&packs, &[]);
        let mut numbers: Vec<Number> = NUMBERS.iter().map(|n| number(n)).collect();
        numbers.extend(area_codes.iter().map(|npa| Number::from_u64_unchecked(10_000_000_000 + npa * 10_000_000 + 5_550_123)));
        let mut at = start;
        for step in steps {
            at += step;
            let fresh = schedule(&packs, &[]);
            let mut cache = PlaceCache::new(&batched, at, 1_000);
            for &n in &numbers {
                prop_assert_eq!(cache.check(&batched, n), fresh.check(n, &Hints::default(), at), "{} at {}", n.masked(), at);
            }
        }
    }
}
