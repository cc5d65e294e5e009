//! `suppressd gen-sample`: distinct, valid random numbers of one country, for demos, tests and
//! benchmarks.
//!
//! Owns a sampler that needs no knowledge of numbering plans: it first learns which national
//! number lengths and leading digits produce valid numbers, by probing random completions of
//! each prefix against the full libphonenumber validation, refining sparse prefixes digit by
//! digit (up to 4 digits) and keeping dense ones, and estimates how many valid numbers each
//! prefix holds. It then draws prefixes in proportion to those estimates, completes them with
//! random digits and validates every drawn number in full (rejection sampling), so every number
//! written is valid, and placed in the region when its calling code is shared (+1 is also
//! Canada and the Caribbean).
//!
//! Output depends only on the region, the count and the seed: work is cut into fixed chunks,
//! each with its own ChaCha8 stream, and assembled in chunk order, whatever the thread count.
//! It never prints a generated number to the terminal; they go to the output file only.

use super::{CliError, CliResult, parse_region, thousands, threads};
use crate::engine::number::{NumberParser, Region};
use clap::ValueEnum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlibphonenumber::PHONE_NUMBER_UTIL;
use rlibphonenumber::enums::Region as LibRegion;
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Numbers per generation chunk: the unit of work and of determinism.
const CHUNK: u64 = 1 << 14;
/// Random completions tried per prefix while learning.
const PROBES: u64 = 32;
/// Deepest prefix learned (national significant number digits).
const MAX_DEPTH: u32 = 4;
/// Prefixes probed per length and level at most; bounds learning time for countries with many
/// number lengths, at the cost of coarser prefixes.
const MAX_CHILDREN: usize = 10_000;
/// Shortest national significant number considered (a few small countries use 4-5 digits).
const MIN_NSN: u32 = 4;
/// E.164 allows 15 digits in all.
const MAX_E164_DIGITS: u32 = 15;
/// Separates the learning streams from the generation streams of one seed.
const LEARN_SALT: u64 = 0x6c65_6172_6e5f_7631;
/// Largest sample: 16 bytes of memory per number while generating.
const MAX_COUNT: u64 = 1_000_000_000;
/// Attempts allowed per wanted number before giving up on a region.
const MAX_ATTEMPTS_PER_NUMBER: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SampleFormat {
    /// One +E.164 number per line
    Lines,
    /// The US National Do-Not-Call flat file: AREA,NUMBER per line (region US only)
    UsRegistry,
}

#[derive(Debug, clap::Args)]
pub struct GenSampleArgs {
    /// How many distinct numbers to write
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// Region the numbers belong to, e.g. PL or US
    #[arg(long, value_name = "CC", value_parser = parse_region)]
    pub region: Region,
    /// Seed: the same seed, region and count give the same file
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Output format
    #[arg(long, value_enum, default_value = "lines")]
    pub format: SampleFormat,
    /// File to write (atomically)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// A learned prefix of national significant numbers of one length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Leaf {
    /// National significant number digits.
    length: u32,
    /// The leading digits, as a number of `depth` digits (leading zeros allowed).
    prefix: u64,
    depth: u32,
}

impl Leaf {
    /// Numbers of this length that start with the prefix.
    fn span(self) -> u64 {
        10u64.pow(self.length - self.depth)
    }
}

/// What the sampler learned about a region.
#[derive(Debug)]
struct Model {
    calling_code: u64,
    leaves: Vec<Leaf>,
    /// Running sums of leaf weights (valid probes times span), for weighted draws.
    cumulative: Vec<u64>,
    /// Estimated count of valid numbers over all leaves.
    estimate: f64,
}

/// Decides whether a candidate is a valid number of the region (full validation).
struct Validator {
    parser: NumberParser,
    calling_code: u64,
    /// Set when other regions share the calling code (+1, +7, +44...): candidates must then
    /// also be placed in this region, not merely be valid somewhere.
    shared_code: Option<LibRegion>,
    us_registry: bool,
    text: String,
    /// Candidates put through full validation (for the acceptance rate).
    checks: u64,
}

impl Validator {
    fn new(region: &Region, us_registry: bool) -> Validator {
        let calling_code = region.calling_code();
        let shared = PHONE_NUMBER_UTIL
            .get_regions_for_country_calling_code(i32::from(calling_code))
            .is_some_and(|regions| regions.count() > 1);
        Validator {
            parser: NumberParser::new(Some(*region)),
            calling_code: u64::from(calling_code),
            shared_code: LibRegion::from_code(&region.code()).ok().filter(|_| shared),
            us_registry,
            text: String::with_capacity(20),
            checks: 0,
        }
    }

    /// Whether the (valid) number in `self.text` belongs to this region rather than to another
    /// region of the same calling code. `NumberParser` validates without regard to region, so
    /// this asks the library directly; only numbers already known valid get here.
    fn in_region(&self) -> bool {
        let Some(region) = self.shared_code else {
            return true;
        };
        PHONE_NUMBER_UTIL
            .parse(&self.text, None)
            .ok()
            .and_then(|parsed| PHONE_NUMBER_UTIL.get_region_for_number(&parsed))
            == Some(region)
    }

    /// `nsn` is a national significant number of `length` digits (leading zeros count).
    fn e164(&self, length: u32, nsn: u64) -> u64 {
        self.calling_code * 10u64.pow(length) + nsn
    }

    fn is_valid(&mut self, length: u32, nsn: u64) -> bool {
        use std::fmt::Write as _;
        let value = self.e164(length, nsn);
        if self.us_registry
            && (length != 10 || nsn / 10_000_000 < 200 || nsn % 10_000_000 < 2_000_000)
        {
            return false;
        }
        self.checks += 1;
        self.text.clear();
        let _ = write!(self.text, "+{value}");
        // The parsed number must be exactly the candidate (no digits reinterpreted).
        self.parser
            .parse(&self.text)
            .is_ok_and(|number| number.get() == value)
            && self.in_region()
    }
}

fn digits(mut value: u64) -> u32 {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

/// Maps `items` on all threads, keeping their order.
fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&mut Validator, &T) -> R + Sync,
    validator: impl Fn() -> Validator + Sync,
) -> Vec<R> {
    let per_thread = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|part| {
                let (work, validator) = (&work, &validator);
                scope.spawn(move || {
                    let mut validator = validator();
                    part.iter()
                        .map(|item| work(&mut validator, item))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Probes random completions of prefixes, refining the ones that hold valid numbers.
fn learn(region: &Region, us_registry: bool, seed: u64, threads: usize) -> Model {
    let calling_code = u64::from(region.calling_code());
    let max_length = MAX_E164_DIGITS - digits(calling_code);
    let mut leaves = Vec::new();
    let mut weights = Vec::new();
    for length in MIN_NSN..=max_length {
        // (prefix, valid probes); the empty prefix stands for the whole length.
        let mut frontier: Vec<(Leaf, u64)> = vec![(
            Leaf {
                length,
                prefix: 0,
                depth: 0,
            },
            0,
        )];
        for depth in 1..=MAX_DEPTH.min(length) {
            // Prefixes where 3 in 4 probes are valid are final: refining them would cost more
            // learning than the rejections it saves.
            let (dense, sparse): (Vec<_>, Vec<_>) = frontier
                .into_iter()
                .partition(|&(leaf, hits)| leaf.depth > 0 && hits * 4 >= PROBES * 3);
            if sparse.len() * 10 > MAX_CHILDREN {
                frontier = dense.into_iter().chain(sparse).collect();
                break;
            }
            let children: Vec<Leaf> = sparse
                .iter()
                .flat_map(|(parent, _)| {
                    (0..10).map(move |digit| Leaf {
                        length,
                        prefix: parent.prefix * 10 + digit,
                        depth,
                    })
                })
                .collect();
            let hits = par_map(
                &children,
                threads,
                |validator, leaf| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ LEARN_SALT);
                    rng.set_stream(u64::from(length) << 56 | u64::from(depth) << 48 | leaf.prefix);
                    let span = leaf.span();
                    (0..PROBES)
                        .filter(|_| {
                            let nsn = leaf.prefix * span + rng.random_range(0..span);
                            validator.is_valid(length, nsn)
                        })
                        .count() as u64
                },
                || Validator::new(region, us_registry),
            );
            frontier = dense
                .into_iter()
                .chain(children.into_iter().zip(hits).filter(|&(_, hits)| hits > 0))
                .collect();
        }
        for (leaf, hits) in frontier {
            if leaf.depth > 0 {
                leaves.push(leaf);
                weights.push(hits * leaf.span());
            }
        }
    }
    let mut total = 0u64;
    let cumulative = weights
        .iter()
        .map(|&weight| {
            total = total.saturating_add(weight);
            total
        })
        .collect();
    Model {
        calling_code,
        estimate: weights.iter().map(|&w| w as f64).sum::<f64>() / PROBES as f64,
        leaves,
        cumulative,
    }
}

/// Draws one candidate (length, national significant number) from the learned prefixes.
fn draw(model: &Model, rng: &mut ChaCha8Rng) -> (u32, u64) {
    let total = model.cumulative.last().copied().unwrap_or(0);
    let pick = rng.random_range(0..total);
    let index = model.cumulative.partition_point(|&sum| sum <= pick);
    let leaf = model.leaves[index.min(model.leaves.len() - 1)];
    let span = leaf.span();
    (leaf.length, leaf.prefix * span + rng.random_range(0..span))
}

/// Fills one chunk with valid numbers from its own stream; `None` if the region is too sparse.
fn chunk(
    model: &Model,
    validator: &mut Validator,
    seed: u64,
    index: u64,
    len: u64,
) -> Option<Vec<u64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let mut out = Vec::with_capacity(len as usize);
    let mut attempts = 0u64;
    while (out.len() as u64) < len {
        attempts += 1;
        if attempts > len * MAX_ATTEMPTS_PER_NUMBER {
            return None;
        }
        let (length, nsn) = draw(model, &mut rng);
        if validator.is_valid(length, nsn) {
            out.push(validator.e164(length, nsn));
        }
    }
    Some(out)
}

/// Generates `count` distinct valid numbers, deterministically for `seed`; also returns how
/// many candidates were validated.
fn generate(
    model: &Model,
    region: &Region,
    us_registry: bool,
    count: u64,
    seed: u64,
    threads: usize,
) -> CliResult<(Vec<u64>, u64)> {
    let too_sparse = || {
        CliError::runtime(format!(
            "could not draw valid numbers for region {} (too few learned prefixes)",
            region.code()
        ))
    };
    let chunks = count.div_ceil(CHUNK);
    let next = AtomicU64::new(0);
    type Done = (Vec<(u64, Option<Vec<u64>>)>, u64);
    let parts: Vec<Done> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut validator = Validator::new(region, us_registry);
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= chunks {
                            return (done, validator.checks);
                        }
                        let len = CHUNK.min(count - index * CHUNK);
                        done.push((index, chunk(model, &mut validator, seed, index, len)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut checks: u64 = parts.iter().map(|(_, checks)| checks).sum();
    let mut parts: Vec<(u64, Option<Vec<u64>>)> =
        parts.into_iter().flat_map(|(done, _)| done).collect();
    parts.sort_unstable_by_key(|(index, _)| *index);
    let mut numbers = Vec::with_capacity(count as usize);
    for (_, part) in parts {
        numbers.extend(part.ok_or_else(too_sparse)?);
    }
    // Drop repeats (keeping first occurrences in order), then top up from a stream of its own.
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    let repeated: HashSet<u64> = sorted
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect();
    if repeated.is_empty() {
        return Ok((numbers, checks));
    }
    let mut seen: HashSet<u64> = HashSet::new();
    numbers.retain(|value| !repeated.contains(value) || seen.insert(*value));
    let mut validator = Validator::new(region, us_registry);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    let mut extra: HashSet<u64> = HashSet::new();
    // One budget for the whole top-up, fixed before it starts: a bound recomputed from the
    // numbers still missing shrinks while the attempts made grow, and refused large counts
    // (50 M US numbers) whose top-up was nearly done.
    let budget = (count - numbers.len() as u64 + 1) * MAX_ATTEMPTS_PER_NUMBER;
    let mut attempts = 0u64;
    while (numbers.len() as u64) < count {
        attempts += 1;
        if attempts > budget {
            return Err(too_sparse());
        }
        let (length, nsn) = draw(model, &mut rng);
        let value = validator.e164(length, nsn);
        if sorted.binary_search(&value).is_err()
            && !extra.contains(&value)
            && validator.is_valid(length, nsn)
        {
            extra.insert(value);
            numbers.push(value);
        }
    }
    checks += validator.checks;
    Ok((numbers, checks))
}

fn write_numbers(
    path: &Path,
    numbers: &[u64],
    format: SampleFormat,
    calling_code: u64,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("output path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&temp)?);
        for &value in numbers {
            match format {
                SampleFormat::Lines => writeln!(out, "+{value}")?,
                SampleFormat::UsRegistry => {
                    let national = value - calling_code * 10_000_000_000;
                    writeln!(
                        out,
                        "{},{:07}",
                        national / 10_000_000,
                        national % 10_000_000
                    )?
                }
            }
        }
        let file = out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

pub fn run(args: GenSampleArgs) -> CliResult<()> {
    let started = Instant::now();
    let us_registry = args.format == SampleFormat::UsRegistry;
    if us_registry && args.region.code() != "US" {
        return Err(CliError::usage(
            "--format us-registry writes US numbers only; use --region US",
        ));
    }
    if args.count > MAX_COUNT {
        return Err(CliError::usage(format!(
            "--count is at most {} (the sample is held in memory)",
            thousands(MAX_COUNT)
        )));
    }
    let threads = threads();
    let model = learn(&args.region, us_registry, args.seed, threads);
    let learned = started.elapsed();
    if model.leaves.is_empty() {
        return Err(CliError::runtime(format!(
            "found no valid numbers for region {}",
            args.region.code()
        )));
    }
    // Sampling most of a small numbering plan would spend its time rejecting repeats.
    if args.count as f64 > model.estimate / 4.0 {
        return Err(CliError::usage(format!(
            "region {} has about {} valid numbers; --count must be at most a quarter of that",
            args.region.code(),
            thousands(model.estimate as u64)
        )));
    }
    let (numbers, checks) = generate(
        &model,
        &args.region,
        us_registry,
        args.count,
        args.seed,
        threads,
    )?;
    write_numbers(&args.out, &numbers, args.format, model.calling_code)
        .map_err(|error| CliError::runtime(format!("{}: {error}", args.out.display())))?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} numbers of region {} to {} in {seconds:.2} s ({:.0} numbers/s; learned {} \
         prefixes in {:.2} s, about {} valid numbers; {:.0} % of candidates valid)",
        thousands(args.count),
        args.region.code(),
        args.out.display(),
        args.count as f64 / seconds.max(1e-9),
        model.leaves.len(),
        learned.as_secs_f64(),
        thousands(model.estimate as u64),
        100.0 * args.count as f64 / checks.max(1) as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_digits() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(1), 1);
        assert_eq!(digits(48), 2);
        assert_eq!(digits(420), 3);
    }

    #[test]
    fn draws_only_learned_prefixes() {
        let model = Model {
            calling_code: 48,
            leaves: vec![
                Leaf {
                    length: 9,
                    prefix: 60,
                    depth: 2,
                },
                Leaf {
                    length: 9,
                    prefix: 512,
                    depth: 3,
                },
            ],
            cumulative: vec![10, 11],
            estimate: 1.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen_second = false;
        for _ in 0..2_000 {
            let (length, nsn) = draw(&model, &mut rng);
            assert_eq!(length, 9);
            assert!(nsn / 10_000_000 == 60 || nsn / 1_000_000 == 512, "{nsn}");
            seen_second |= nsn / 1_000_000 == 512;
        }
        assert!(seen_second);
    }
}
