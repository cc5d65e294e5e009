//! Number parsing: the hot `+digits` path against `str::parse::<u64>` as a floor, and the full
//! rlibphonenumber path on national input for scale. SIP: the dip's parser and response
//! builder on INVITEs as SIPp and Kamailio send them (messages per second).
//!
//! Each iteration parses a whole pre-generated batch of varied inputs, so branch predictors
//! cannot learn one string; criterion's throughput figure is parses per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use suppressd::engine::number::{Number, NumberParser, Region};

const HOT_BATCH: usize = 4096;
const FULL_BATCH: usize = 512;

/// splitmix64: deterministic inputs without a rand dependency.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// `+digits` strings: mixed 1-, 2- and 3-digit country codes and 8 to 15 digits in all.
fn e164_inputs() -> Vec<String> {
    const CODES: [u64; 12] = [1, 7, 33, 39, 44, 48, 49, 86, 91, 353, 880, 971];
    let mut mix = Mix(0x5eed);
    let inputs: Vec<String> = (0..HOT_BATCH)
        .map(|_| {
            let code = CODES[mix.below(CODES.len() as u64) as usize];
            let code_digits = code.ilog10() + 1;
            let total = 8 + mix.below(8) as u32;
            let rest = 10u64.pow(total - code_digits);
            format!("+{}", code * rest + mix.below(rest))
        })
        .collect();
    assert!(inputs.iter().all(|text| Number::parse_e164(text).is_ok()));
    inputs
}

/// Valid Polish mobile and fixed-line numbers, written the ways people type them.
fn national_pl_inputs(parser: &NumberParser) -> Vec<String> {
    const MOBILE: [u64; 8] = [50, 51, 53, 60, 66, 69, 72, 88];
    let mut mix = Mix(0xf011);
    let inputs: Vec<String> = (0..FULL_BATCH)
        .map(|_| {
            let digits = format!(
                "{}{:07}",
                MOBILE[mix.below(MOBILE.len() as u64) as usize],
                mix.below(10_000_000)
            );
            let (a, b, c) = (&digits[..3], &digits[3..6], &digits[6..]);
            match mix.below(4) {
                0 => format!("{a} {b} {c}"),
                1 => format!("{a}-{b}-{c}"),
                // A Warsaw fixed line instead, grouped the landline way.
                2 => format!("22 {} {} {}", &digits[2..5], &digits[5..7], &digits[7..]),
                _ => digits,
            }
        })
        .collect();
    assert!(inputs.iter().all(|text| parser.parse(text).is_ok()));
    inputs
}

fn parse(c: &mut Criterion) {
    let hot = e164_inputs();
    let pl = NumberParser::new(Some(Region::parse("PL").unwrap()));
    let national = national_pl_inputs(&pl);

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(hot.len() as u64));
    group.bench_function("e164_hot", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for text in &hot {
                if let Ok(number) = Number::parse_e164(black_box(text)) {
                    sum = sum.wrapping_add(number.get());
                }
            }
            sum
        })
    });
    group.bench_function("std_u64", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for text in &hot {
                if let Ok(value) = black_box(text)[1..].parse::<u64>() {
                    sum = sum.wrapping_add(value);
                }
            }
            sum
        })
    });
    group.throughput(Throughput::Elements(national.len() as u64));
    group.bench_function("full", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for text in &national {
                if let Ok(number) = pl.parse(black_box(text)) {
                    sum = sum.wrapping_add(number.get());
                }
            }
            sum
        })
    });
    group.finish();
}

/// An INVITE as SIPp's uac scenario sends it (with SDP), with the call number `n`.
fn sipp_invite(n: u64) -> String {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:+1201555{:04}@127.0.0.1:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-{n}-0\r\n\
         From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag00{n}\r\n\
         To: <sip:+12015550123@127.0.0.1:5070>\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: sip:sipp@127.0.0.1:5061\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        n % 10_000,
        sdp.len()
    )
}

/// An INVITE as Kamailio forwards it: its own Via on top of two more, Record-Route, rport.
fn kamailio_invite(n: u64) -> String {
    format!(
        "INVITE sip:+1201555{:04};npdi@127.0.0.1:5090;user=phone SIP/2.0\r\n\
         Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcydz{n};rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5061;received=10.0.0.5;rport=5061;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0\r\n\
         From: \"Dialer, Inc\" <sip:dialer@example.com>;tag=abc{n}\r\n\
         To: <sip:+12015550199@example.com>\r\n\
         Call-ID: a84b4c76e66710-{n}@pc33.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         Max-Forwards: 69\r\n\
         X-Tenant: acme\r\n\
         x-campaign: outbound\r\n\
         Content-Length: 0\r\n\r\n",
        n % 10_000
    )
}

fn sip(c: &mut Criterion) {
    use suppressd::server::sip;
    const BATCH: u64 = 256;
    let config = suppressd::config::SipConfig::default();
    let source: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Elements(BATCH));
    for (name, make) in [
        ("sipp_invite", sipp_invite as fn(u64) -> String),
        ("kamailio_invite", kamailio_invite),
    ] {
        let messages: Vec<String> = (0..BATCH).map(make).collect();
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| {
                for message in &messages {
                    black_box(sip::parse_request(black_box(message.as_bytes())).is_ok());
                }
            })
        });
        let mut out = Vec::with_capacity(2048);
        group.bench_function(format!("parse_and_redirect/{name}"), |b| {
            b.iter(|| {
                for message in &messages {
                    let request = sip::parse_request(black_box(message.as_bytes())).unwrap();
                    out.clear();
                    sip::respond_into(
                        &mut out,
                        &request.echo,
                        &sip::Answer::Redirect,
                        request.uri,
                        &config,
                        source,
                    );
                    black_box(out.len());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, sip);
criterion_main!(benches);
