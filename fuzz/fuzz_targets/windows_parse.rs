//! Arbitrary bytes as calling-window text from outside: a rule pack (`Pack::parse`), custom
//! window rows from a campaign's config (`Schedule::new`), and a request's location hints
//! (`Hints::parse`, `Located::parse`). A value or an error, never a panic; a schedule that
//! parses answers every instant, and an OUTSIDE answer's next instant is itself allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::number::Number;
use suppressd::rules::{Answer, Hints, Located, Pack, Schedule};

/// Miami, Paris, and a number of no known place.
const NUMBERS: [u64; 3] = [13_055_550_123, 33_142_000_000, 80_012_345_678];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Pack::parse("fuzz", &text);
    let rows: Vec<String> = text.lines().take(32).map(str::to_owned).collect();
    if let Ok(schedule) = Schedule::new("fuzz", &["us-federal".into()], &rows) {
        // Instants spread over 2026 by the input's length: weekdays, nights, DST changes.
        let at = 1_767_225_600_000 + (data.len() as i64 % 365) * 86_400_000 + 3_600_000 * 7;
        for number in NUMBERS.into_iter().filter_map(|n| Number::from_u64(n).ok()) {
            if let Answer::Outside {
                next_allowed_at_ms: Some(next),
            } = schedule.check(number, &Hints::default(), at)
            {
                assert!(next > at, "next {next} is not after {at}");
                assert_eq!(
                    schedule.check(number, &Hints::default(), next),
                    Answer::Allowed,
                    "next_allowed_at is not allowed"
                );
            }
        }
    }
    let mut fields = text.splitn(3, '\n');
    let (zone, state, postal) = (
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
    );
    if let Ok(hints) = Hints::parse(zone, state, postal) {
        assert!(!zone.is_empty() || !state.is_empty() || !postal.is_empty() || hints.is_empty());
    }
    let each: Vec<(&str, &str, &str)> = text
        .split('\n')
        .take(64)
        .map(|line| {
            let mut parts = line.splitn(3, ',');
            (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            )
        })
        .collect();
    if let Ok(located) = Located::parse(each.iter().copied()) {
        assert_eq!(located.of_number.len(), each.len());
        assert!(located.of_number.iter().all(|&id| (id as usize) < located.hints.len()));
    }
});
