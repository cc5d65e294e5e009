//! The policy's rules over loaded sets: one number at a time (`CampaignState::decide`, what a
//! single check runs) against the batched form (`decide_batch`, what batch checks run), with
//! empty overlays and with mutations in force in every set's overlay; and the same batch for
//! a campaign with calling windows (`us-federal` + `us-states`) beside the plain campaign, on
//! the bench's numbers (one area code) and on numbers spread over every US area code.
//!
//! Two block sets (a 2 M-number registry and a 200 k internal list) and a consent set of
//! 200 k, for a campaign that requires consent; batches of 1 000 numbers, one in ten on the
//! registry. Sets are built once outside the timed loop; criterion's throughput figure is
//! numbers decided per second.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use suppressd::config::Config;
use suppressd::engine::date::Day;
use suppressd::engine::fuse::FilterWidth;
use suppressd::engine::number::{Number, NumberError};
use suppressd::engine::set::{SetBuilder, SetSpec, SuppressionSet};
use suppressd::engine::snapshot::SetKind;
use suppressd::policy::{LoadedSet, LoadedSets, Moment, Policy};
use suppressd::store::{Entry, Overlay};

const CONFIG: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"
data_dir = "data"

[sets.registry]
kind = "block"
reason = "national_registry"
files = "registry.*.snap"

[tenants.acme]
region = "US"

[tenants.acme.sets.dnc]
kind = "block"
reason = "internal_dnc"
files = "acme-dnc.*.snap"

[tenants.acme.sets.consent]
kind = "consent"
files = "acme-consent.*.snap"

[tenants.acme.campaigns.outbound]
block_sets = ["registry", "dnc"]
require_consent = true
consent_sets = ["consent"]

[tenants.acme.campaigns.windows]
block_sets = ["registry", "dnc"]
require_consent = true
consent_sets = ["consent"]
calling_windows = ["us-federal", "us-states"]
"#;

const BATCH: usize = 1_000;
const BASE: u64 = 12_015_550_000;

/// splitmix64: deterministic inputs without a rand dependency.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn number(offset: u64) -> Number {
    Number::from_u64_unchecked(BASE + offset)
}

/// A set of the numbers at `offsets`, served from memory.
fn set(name: &str, kind: SetKind, offsets: impl Iterator<Item = u64>) -> LoadedSet {
    let spec = SetSpec {
        name: name.into(),
        kind,
        filter: FilterWidth::Fuse8,
        source: "bench".into(),
        source_date: Some(Day::today()),
        version: 1,
        build_time: 0,
    };
    let mut builder = SetBuilder::new(spec, None).unwrap();
    for offset in offsets {
        builder.push(number(offset), None).unwrap();
    }
    let image = builder.build(2).unwrap().image;
    LoadedSet {
        set: SuppressionSet::from_image(image, None).unwrap(),
        file: PathBuf::from(name),
        loaded_at_ms: 0,
    }
}

fn policy(c: &mut Criterion) {
    let config = Config::parse(CONFIG, "bench.toml", std::path::Path::new("/b")).unwrap();
    let policy = Policy::compile(&config);
    // Config order: registry, acme/dnc, acme/consent.
    let loaded = LoadedSets {
        slots: vec![
            Some(Arc::new(set(
                "registry",
                SetKind::Block,
                (0..2_000_000).map(|i| i * 5),
            ))),
            Some(Arc::new(set(
                "acme-dnc",
                SetKind::Block,
                (0..200_000).map(|i| i * 50 + 1),
            ))),
            Some(Arc::new(set(
                "acme-consent",
                SetKind::Consent,
                (0..200_000).map(|i| i * 50 + 2),
            ))),
        ],
    };
    let (_, campaign) = policy.resolve("acme", "outbound").unwrap();
    let today = Day::today();
    let mut state = 7u64;
    let numbers: Vec<Result<Number, NumberError>> = (0..BATCH)
        .map(|i| {
            let offset = if i % 10 == 0 {
                (mix(&mut state) % 2_000_000) * 5
            } else {
                mix(&mut state) % 10_000_000
            };
            Ok(number(offset))
        })
        .collect();
    let empty: Vec<Overlay> = (0..3).map(|_| Overlay::default()).collect();
    // Mutations in force in every set: an overlay of 10 000 keys each, some of them asked.
    let busy: Vec<Overlay> = (0..3).map(|_| Overlay::default()).collect();
    for (index, overlay) in busy.iter().enumerate() {
        for i in 0..10_000u64 {
            let key = number(i * 7 + index as u64).get();
            let entry = match i % 2 {
                0 => Entry::Present {
                    expires: None,
                    seq: i,
                },
                _ => Entry::Absent { seq: i },
            };
            overlay.apply(key, entry);
        }
    }
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, overlays) in [("empty_overlays", &empty), ("busy_overlays", &busy)] {
        let view = policy.campaign_state(campaign, &loaded, overlays, today, false);
        group.bench_function(format!("decide/{name}"), |b| {
            b.iter(|| {
                for number in &numbers {
                    black_box(view.decide(black_box(number.clone()), today));
                }
            })
        });
        let mut out = Vec::with_capacity(BATCH);
        group.bench_function(format!("decide_batch/{name}"), |b| {
            b.iter(|| black_box(view.decide_batch(black_box(&numbers), today, &mut out)))
        });
    }
    group.finish();

    // Calling windows beside the plain check, same sets, same batches, one instant per batch
    // (a Monday noon in New York: most numbers allowed, so every rule runs to the end).
    let (_, windowed) = policy.resolve("acme", "windows").unwrap();
    let at_ms = 1_781_539_200_000; // 2026-06-15T16:00:00Z
    let moment = || Moment {
        at_ms,
        ..Moment::default()
    };
    // Every US area code 201..=989, exchange and line varied.
    let spread: Vec<Result<Number, NumberError>> = (0..BATCH)
        .map(|_| {
            let npa = 201 + mix(&mut state) % 789;
            let rest = 2_000_000 + mix(&mut state) % 8_000_000;
            Ok(Number::from_u64_unchecked(
                10_000_000_000 + npa * 10_000_000 + rest,
            ))
        })
        .collect();
    let mut group = c.benchmark_group("windows");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, batch) in [("one_area_code", &numbers), ("all_area_codes", &spread)] {
        let plain = policy
            .campaign_state(campaign, &loaded, &empty, today, false)
            .at(moment());
        let with_windows = policy
            .campaign_state(windowed, &loaded, &empty, today, false)
            .at(moment());
        let mut out = Vec::with_capacity(BATCH);
        group.bench_function(format!("decide_batch/plain/{name}"), |b| {
            b.iter(|| black_box(plain.decide_batch(black_box(batch), today, &mut out)))
        });
        group.bench_function(format!("decide_batch/windows/{name}"), |b| {
            b.iter(|| black_box(with_windows.decide_batch(black_box(batch), today, &mut out)))
        });
        // Interleaved: each round times plain batches and windowed batches alternately, so a
        // busy machine slows both alike; criterion reports the windowed time, and the ratio
        // of each round (windowed / plain) is kept and printed as a median at the end.
        let ratios = std::cell::RefCell::new(Vec::new());
        group.bench_function(format!("decide_batch/interleaved/{name}"), |b| {
            b.iter_custom(|iters| {
                let (mut plain_time, mut windows_time) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    let started = Instant::now();
                    black_box(plain.decide_batch(black_box(batch), today, &mut out));
                    plain_time += started.elapsed();
                    let started = Instant::now();
                    black_box(with_windows.decide_batch(black_box(batch), today, &mut out));
                    windows_time += started.elapsed();
                }
                ratios
                    .borrow_mut()
                    .push(windows_time.as_secs_f64() / plain_time.as_secs_f64());
                windows_time
            })
        });
        let mut ratios = ratios.into_inner();
        ratios.sort_by(f64::total_cmp);
        if let Some(median) = ratios.get(ratios.len() / 2) {
            eprintln!(
                "windows/decide_batch/interleaved/{name}: windowed / plain, median of {} rounds: {median:.3} (quartiles {:.3}-{:.3})",
                ratios.len(),
                ratios[ratios.len() / 4],
                ratios[ratios.len() * 3 / 4]
            );
        }
        group.bench_function(format!("decide/windows/{name}"), |b| {
            b.iter(|| {
                for number in batch.iter() {
                    black_box(with_windows.decide(black_box(number.clone()), today));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
