//! The requests a check-mode run sends, generated and encoded before the timed phase.
//!
//! Present numbers come from a snapshot file (`--present`, plain E.164 keys) or a list
//! (`--present-list`), sampled into memory; absent numbers are drawn next to present ones (the
//! last four digits replaced: same country, same number plan, same length) and kept only when
//! the source says they are absent; with no source, numbers are random US ones. Exactly
//! `--hit-ratio` of the numbers are present, evenly spread. Every request is encoded once here
//! and sent as bytes, so the timed phase encodes nothing. Never touches the network.

use super::args::LoadgenArgs;
use super::plan::Plan;
use crate::engine::number::Number;
use crate::engine::set::{Membership, SuppressionSet};
use crate::proto;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// The requests of a check-mode run: the present numbers' source loaded and sampled, then
/// `plan.payloads` requests drawn and encoded. The message names the flag at fault.
pub(super) fn generate(
    args: &LoadgenArgs,
    plan: &Plan,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Payload>, String> {
    let source = load_source(args, rng)?;
    build_payloads(args, plan, &source, rng)
}

/// Where present numbers come from, and how to tell that a drawn number is absent.
enum Members {
    /// Synthetic US numbers only; nothing known to be present.
    None,
    Set(Box<SuppressionSet>),
    /// Every number of a list, sorted.
    Sorted(Vec<u64>),
}

struct Source {
    sample: Vec<u64>,
    members: Members,
}

impl Source {
    pub(super) fn contains(&self, value: u64) -> bool {
        match &self.members {
            Members::None => false,
            Members::Set(set) => set.get(Number::from_u64_unchecked(value)) != Membership::Absent,
            Members::Sorted(all) => all.binary_search(&value).is_ok(),
        }
    }
}

/// Keeps a uniform sample of at most `keep` items of `items` (reservoir sampling).
fn reservoir(items: impl Iterator<Item = u64>, keep: usize, rng: &mut ChaCha8Rng) -> Vec<u64> {
    let mut sample = Vec::with_capacity(keep.min(1 << 20));
    for (seen, item) in items.enumerate() {
        if sample.len() < keep {
            sample.push(item);
        } else {
            let slot = rng.random_range(0..=seen);
            if slot < keep {
                sample[slot] = item;
            }
        }
    }
    sample
}

fn load_source(args: &LoadgenArgs, rng: &mut ChaCha8Rng) -> Result<Source, String> {
    if let Some(path) = &args.present {
        let set = SuppressionSet::open(path, None).map_err(|e| format!("--present: {e}"))?;
        if set.is_empty() {
            return Err(format!("--present {}: the set is empty", path.display()));
        }
        let sample = reservoir(set.entries().map(|(key, _)| key), args.present_sample, rng);
        return Ok(Source {
            sample,
            members: Members::Set(Box::new(set)),
        });
    }
    if let Some(path) = &args.present_list {
        let mut all = read_list(path)?;
        all.sort_unstable();
        all.dedup();
        if all.is_empty() {
            return Err(format!("--present-list {}: no numbers", path.display()));
        }
        let sample = reservoir(all.iter().copied(), args.present_sample, rng);
        return Ok(Source {
            sample,
            members: Members::Sorted(all),
        });
    }
    Ok(Source {
        sample: Vec::new(),
        members: Members::None,
    })
}

fn read_list(path: &Path) -> Result<Vec<u64>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("--present-list {}: {e}", path.display()))?;
    let mut numbers = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("--present-list {}: {e}", path.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = Number::parse_e164(line).map_err(|e| {
            format!(
                "--present-list {} line {}: not a '+digits' number ({e})",
                path.display(),
                index + 1
            )
        })?;
        numbers.push(number.get());
    }
    Ok(numbers)
}

/// True when number `index` of the pool is a present one: exactly `ratio` of any run of
/// numbers, evenly spread (a batch of 1000 at 0.01 holds exactly 10).
pub fn is_hit(index: u64, ratio: f64) -> bool {
    ((index + 1) as f64 * ratio).floor() > (index as f64 * ratio).floor()
}

/// A random US number: +1, NPA and NXX in 200..=999, any line number.
fn random_us(rng: &mut ChaCha8Rng) -> u64 {
    let npa = rng.random_range(200..1000u64);
    let nxx = rng.random_range(200..1000u64);
    let line = rng.random_range(0..10_000u64);
    10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line
}

/// A number absent from the source, in the range of its present numbers.
fn draw_absent(source: &Source, rng: &mut ChaCha8Rng) -> Result<u64, String> {
    if source.sample.is_empty() {
        return Ok(random_us(rng));
    }
    for _ in 0..10_000 {
        let base = source.sample[rng.random_range(0..source.sample.len())];
        let candidate = base - base % 10_000 + rng.random_range(0..10_000u64);
        if !source.contains(candidate) {
            return Ok(candidate);
        }
    }
    Err("cannot draw absent numbers: the present set fills its number blocks".into())
}

/// One pre-encoded request.
#[derive(Clone)]
pub(super) struct Payload {
    pub(super) bytes: Arc<[u8]>,
    pub(super) numbers: u32,
    pub(super) present: u32,
}

fn build_payloads(
    args: &LoadgenArgs,
    plan: &Plan,
    source: &Source,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Payload>, String> {
    let mut payloads = Vec::with_capacity(plan.payloads);
    let mut index = 0u64;
    let mut values = Vec::with_capacity(plan.batch_size);
    for _ in 0..plan.payloads {
        values.clear();
        let mut present = 0u32;
        for _ in 0..plan.batch_size {
            let value = if is_hit(index, plan.hit_ratio) {
                present += 1;
                source.sample[rng.random_range(0..source.sample.len())]
            } else {
                draw_absent(source, rng)?
            };
            values.push(value);
            index += 1;
        }
        let bytes = if args.mode.batched() {
            let mut request = proto::CheckBatchRequest {
                tenant: args.tenant.clone(),
                campaign: args.campaign.clone(),
                ..Default::default()
            };
            if args.strings {
                request.numbers = values
                    .iter()
                    .map(|&v| Number::from_u64_unchecked(v).to_e164_string())
                    .collect();
            } else {
                request.e164 = values.clone();
            }
            prost::Message::encode_to_vec(&request)
        } else {
            let request = proto::CheckRequest {
                number: Number::from_u64_unchecked(values[0]).to_e164_string(),
                tenant: args.tenant.clone(),
                campaign: args.campaign.clone(),
                ..Default::default()
            };
            prost::Message::encode_to_vec(&request)
        };
        payloads.push(Payload {
            bytes: bytes.into(),
            numbers: plan.batch_size as u32,
            present,
        });
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hits_are_exact_and_evenly_spread() {
        for (ratio, per_thousand) in [(0.0, 0), (0.01, 10), (0.25, 250), (0.5, 500), (1.0, 1000)] {
            for start in [0u64, 1000, 7000] {
                let hits = (start..start + 1000).filter(|&i| is_hit(i, ratio)).count();
                assert_eq!(hits, per_thousand, "ratio {ratio} from {start}");
            }
        }
        // 1 %: one hit in every run of 100.
        let positions: Vec<u64> = (0..300).filter(|&i| is_hit(i, 0.01)).collect();
        assert_eq!(positions, vec![99, 199, 299]);
    }

    #[test]
    fn reservoir_keeps_everything_when_small_and_a_sample_when_large() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            reservoir(0..10, 100, &mut rng),
            (0..10).collect::<Vec<u64>>()
        );
        let sample = reservoir(0..100_000, 1000, &mut rng);
        assert_eq!(sample.len(), 1000);
        // Spread over the whole input, not the first 1000.
        assert!(sample.iter().filter(|&&v| v >= 50_000).count() > 400);
    }

    #[test]
    fn absent_numbers_stay_in_the_present_range_and_out_of_the_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let all: Vec<u64> = (0..5000u64).map(|i| 48_601_000_000 + i * 2).collect();
        let source = Source {
            sample: all.clone(),
            members: Members::Sorted(all.clone()),
        };
        for _ in 0..1000 {
            let value = draw_absent(&source, &mut rng).unwrap();
            assert!(all.binary_search(&value).is_err());
            assert!((48_601_000_000..48_601_010_000).contains(&value), "{value}");
        }
        // A source that fills its blocks cannot give absent numbers.
        let full: Vec<u64> = (48_601_000_000..48_601_010_000).collect();
        let source = Source {
            sample: full.clone(),
            members: Members::Sorted(full),
        };
        assert!(draw_absent(&source, &mut rng).is_err());
        // No source: synthetic US numbers.
        let none = Source {
            sample: Vec::new(),
            members: Members::None,
        };
        let value = draw_absent(&none, &mut rng).unwrap();
        assert!((12_002_000_000..=19_999_999_999).contains(&value));
    }
}
