//! TEMPORARY (removed before merge): builds a synthetic national registry for benchmarks.
//! usage: gen_national OUT.snap COUNT VERSION SEED [SET-NAME]
//! COUNT distinct random +1 NPA-NXX-XXXX numbers (NPA, NXX in 200..=999), source date today.
use rand::{Rng, SeedableRng};
use suppressd::engine::date::Day;
use suppressd::engine::fuse::FilterWidth;
use suppressd::engine::number::Number;
use suppressd::engine::set::{SetBuilder, SetSpec};
use suppressd::engine::snapshot::SetKind;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(&args[1]);
    let count: usize = args[2].parse().unwrap();
    let version: u64 = args[3].parse().unwrap();
    let seed: u64 = args[4].parse().unwrap();
    let started = std::time::Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draw = || {
        10_000_000_000u64
            + rng.random_range(200..1000u64) * 10_000_000
            + rng.random_range(200..1000u64) * 10_000
            + rng.random_range(0..10_000u64)
    };
    let mut keys: Vec<u64> = Vec::with_capacity(count + count / 50);
    while keys.len() < count {
        while keys.len() < count + count / 100 {
            keys.push(draw());
        }
        keys.sort_unstable();
        keys.dedup();
    }
    // Drop the surplus at random positions (truncating sorted keys would cut the top range).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    while keys.len() > count {
        let at = rng.random_range(0..keys.len());
        keys.swap_remove(at);
    }
    eprintln!(
        "{} distinct keys drawn in {:?}",
        keys.len(),
        started.elapsed()
    );
    let spec = SetSpec {
        name: args.get(5).cloned().unwrap_or_else(|| "us-dnc".into()),
        kind: SetKind::Block,
        filter: FilterWidth::Fuse8,
        source: format!("synthetic US national registry, {count} numbers, seed {seed}"),
        source_date: Some(Day::today()),
        version,
        build_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    };
    let mut builder = SetBuilder::new(spec, None).unwrap();
    builder.reserve(keys.len());
    for key in keys {
        builder.push(Number::from_u64_unchecked(key), None).unwrap();
    }
    let built = builder.build(2).unwrap();
    eprintln!("built {:?} in {:?}", built.stats, started.elapsed());
    built.image.write_atomic(&out).unwrap();
    eprintln!(
        "wrote {} ({} bytes) in {:?}",
        out.display(),
        built.image.len(),
        started.elapsed()
    );
}
