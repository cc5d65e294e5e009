//! Bulk conversion of packed integers into numbers (a request's `e164` field): the hot path of
//! batch checks, kept apart from the single conversion it must agree with.

use super::{Number, NumberError, POW10, count_digits, has_calling_code};

impl Number {
    /// Appends [`Number::from_u64`] of each value to `out`, refusals wrapped by `wrap`. A run of
    /// numbers of one length (a country's numbers, nearly every batch) goes through a loop made
    /// for that length: two compares, a division by a constant and a bitmap read per number,
    /// where converting each alone counts its digits and branches on the count (12 % of the
    /// daemon's CheckStream profile; BENCHMARKS.md, issue 18).
    pub fn extend_from_u64<E>(
        values: &[u64],
        out: &mut Vec<Result<Number, E>>,
        wrap: impl Fn(NumberError) -> E,
    ) {
        out.reserve(values.len());
        let mut rest = values;
        while let Some(&first) = rest.first() {
            let taken = match count_digits(first) {
                8 => same_length::<8, E>(rest, out),
                9 => same_length::<9, E>(rest, out),
                10 => same_length::<10, E>(rest, out),
                11 => same_length::<11, E>(rest, out),
                12 => same_length::<12, E>(rest, out),
                13 => same_length::<13, E>(rest, out),
                14 => same_length::<14, E>(rest, out),
                15 => same_length::<15, E>(rest, out),
                _ => 0,
            };
            if taken == 0 {
                // `first` is refused (no valid length, or no assigned calling code): the plain
                // conversion says why.
                out.push(Number::from_u64(first).map_err(&wrap));
                rest = &rest[1..];
            } else {
                rest = &rest[taken..];
            }
        }
    }
}

/// Appends the leading values of `values` that are valid `D`-digit numbers to `out`; returns
/// how many. Stops at the first value of another length or without an assigned calling code.
#[inline(always)]
fn same_length<const D: u32, E>(values: &[u64], out: &mut Vec<Result<Number, E>>) -> usize {
    let (low, high) = (POW10[D as usize - 1], POW10[D as usize]);
    let divisor = POW10[D as usize - 3];
    let mut taken = 0;
    for &value in values {
        if !(low..high).contains(&value) || !has_calling_code(value / divisor) {
            break;
        }
        out.push(Ok(Number(value)));
        taken += 1;
    }
    taken
}
