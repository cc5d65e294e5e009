//! The mutation payload codec: what one journal record says.
//!
//! A mutation is a request (id, time, kind, channel, free-text reason) and the operations it
//! performs: add a key to a set (with an optional consent expiry) or remove one. Erasures add a
//! keyed fingerprint to the erased set and remove the plain number from every other set of the
//! tenant (`Policy::erasure_plan`); the plain number therefore lives in the journal only until
//! compaction drops the segment. A request's keyed [`PayloadDigest`] tells a retry from another
//! request under the same id.
//!
//! Encoding is a small explicit binary format (little-endian, length-prefixed), decoded without
//! panics. No I/O, no metrics.

use crate::engine::date::Day;
use crate::engine::keys::SecretKey;
use crate::rules::attempts::{Outcome, Rule};
use sha2::Digest as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MutationKind {
    Suppress = 1,
    Unsuppress = 2,
    GrantConsent = 3,
    RevokeConsent = 4,
    Erase = 5,
    ApplyChanges = 6,
    // Attempt records (issue 17 §2): decided when applied, in log order (`store::attempts`).
    ReserveAttempt = 7,
    CommitAttempt = 8,
    ReleaseAttempt = 9,
    RecordOutcome = 10,
}

impl MutationKind {
    const ALL: [MutationKind; 10] = [
        MutationKind::Suppress,
        MutationKind::Unsuppress,
        MutationKind::GrantConsent,
        MutationKind::RevokeConsent,
        MutationKind::Erase,
        MutationKind::ApplyChanges,
        MutationKind::ReserveAttempt,
        MutationKind::CommitAttempt,
        MutationKind::ReleaseAttempt,
        MutationKind::RecordOutcome,
    ];

    /// Whether records of this kind carry an [`AttemptRecord`] (and no set operations).
    pub fn is_attempt(self) -> bool {
        (self as u8) >= MutationKind::ReserveAttempt as u8
    }

    fn from_code(code: u8) -> Option<MutationKind> {
        Self::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// The kind whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<MutationKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            MutationKind::Suppress => "suppress",
            MutationKind::Unsuppress => "unsuppress",
            MutationKind::GrantConsent => "grant_consent",
            MutationKind::RevokeConsent => "revoke_consent",
            MutationKind::Erase => "erase",
            MutationKind::ApplyChanges => "apply_changes",
            MutationKind::ReserveAttempt => "reserve_attempt",
            MutationKind::CommitAttempt => "commit_attempt",
            MutationKind::ReleaseAttempt => "release_attempt",
            MutationKind::RecordOutcome => "record_outcome",
        }
    }
}

/// One change to one set. `set` indexes [`Mutation::sets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add {
        set: u16,
        key: u64,
        expires: Option<Day>,
    },
    Remove {
        set: u16,
        key: u64,
    },
}

/// A journalled mutation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Mutation {
    pub kind: Option<MutationKind>,
    pub request_id: String,
    pub tenant: String,
    pub at_ms: i64,
    /// Channel the request came through (phone, sms, chat, web_form, social, email, ...).
    pub source: String,
    pub reason: String,
    /// For erasures: the receipt id handed back.
    pub receipt_id: String,
    /// Who asked: the credential's name, or "anonymous" without authentication.
    pub actor: String,
    /// Set ids (config ids such as "acme/dnc") the ops refer to by index.
    pub sets: Vec<String>,
    pub ops: Vec<Op>,
    /// In fleet mode: the JetStream stream sequence this record was applied from; 0 for a
    /// mutation taken by this host alone (or not yet published). Not part of the digest.
    pub stream_seq: u64,
    /// Attempt kinds only: what the attempt record says.
    pub attempt: Option<AttemptRecord>,
}

/// An attempt record: which call, which counter (scope and keyed fingerprint of the number:
/// never the number), and for a reservation the rules and reservation TTL it is decided
/// with, carried in the record so every host and every replay decides alike whatever its
/// config says by then.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AttemptRecord {
    pub call_id: String,
    /// What attempts are counted per: `campaign:<name>`, `purpose:<name>` or `tenant`.
    pub scope: String,
    pub fingerprint: u64,
    /// Reservations: the rules of the campaign's rule sets.
    pub rules: Vec<Rule>,
    /// Reservations: how long an unconfirmed reservation holds its slot.
    pub ttl_ms: i64,
    /// Outcome records: the outcome.
    pub outcome: Option<Outcome>,
}

/// Bounds that keep an attempt record small and its decoding bounded.
const MAX_RULES: usize = 16;
const MAX_COOLDOWNS: usize = 8;

/// What a request asked for, digested: a repeated request id is told apart from one reused for
/// another request by comparing digests. Made under the tenant's fingerprint key where it has
/// one (a keyed MAC: a digest of an erased person's number is then no easier to reverse than
/// the erased set's own fingerprints); otherwise a plain SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadDigest {
    /// [`SecretKey::tag`] of the key it was made with; 0 when made without one.
    pub key_tag: u32,
    pub hash: [u8; 16],
}

impl PayloadDigest {
    /// Whether two digests provably describe different requests: only digests made under the
    /// same key can be compared (a key rotation makes older ones unknown, not different).
    pub fn differs_from(&self, other: &PayloadDigest) -> bool {
        self.key_tag == other.key_tag && self.hash != other.hash
    }
}

/// Text limits, so a record stays small and decoding bounded.
const MAX_TEXT: usize = 1024;
/// Format 1: the mutation. Format 2: format 1 followed by the stream sequence (fleet mode);
/// written only when there is one, so single-host journals stay readable by older builds.
const FORMAT: u8 = 1;
const FORMAT_FLEET: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mutation record: {0}")]
pub struct DecodeError(pub String);

impl Mutation {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(72 + self.ops.len() * 13);
        out.push(if self.stream_seq == 0 {
            FORMAT
        } else {
            FORMAT_FLEET
        });
        out.push(self.kind.map_or(0, |k| k as u8));
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        for text in [
            &self.request_id,
            &self.tenant,
            &self.source,
            &self.reason,
            &self.receipt_id,
            &self.actor,
        ] {
            put_text(&mut out, text);
        }
        out.extend_from_slice(&(self.sets.len() as u16).to_le_bytes());
        for set in &self.sets {
            put_text(&mut out, set);
        }
        out.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            match *op {
                Op::Add { set, key, expires } => {
                    out.push(1);
                    out.extend_from_slice(&set.to_le_bytes());
                    out.extend_from_slice(&key.to_le_bytes());
                    out.extend_from_slice(&expires.map_or(i32::MIN, |d| d.0).to_le_bytes());
                }
                Op::Remove { set, key } => {
                    out.push(2);
                    out.extend_from_slice(&set.to_le_bytes());
                    out.extend_from_slice(&key.to_le_bytes());
                }
            }
        }
        if self.kind.is_some_and(MutationKind::is_attempt) {
            let attempt = self.attempt.clone().unwrap_or_default();
            attempt.encode(&mut out);
        }
        if self.stream_seq != 0 {
            out.extend_from_slice(&self.stream_seq.to_le_bytes());
        }
        out
    }

    /// The digest of what this mutation asks: kind, tenant, channel, reason and its operations
    /// (set, key, expiry) in a canonical order; not when, who, or its receipt id, which differ
    /// between a request and its retry. An erasure is described by what it adds (keyed
    /// fingerprints in the erased sets), so a retry still matches after the tenant's set list
    /// changed.
    pub fn payload_digest(&self, key: Option<&SecretKey>) -> PayloadDigest {
        let erase = self.kind == Some(MutationKind::Erase);
        let mut ops: Vec<(u8, &str, u64, i32)> = self
            .ops
            .iter()
            .filter_map(|op| {
                let set = |index: u16| self.sets.get(usize::from(index)).map_or("", String::as_str);
                match *op {
                    Op::Add {
                        set: s,
                        key,
                        expires,
                    } => Some((1, set(s), key, expires.map_or(i32::MIN, |d| d.0))),
                    Op::Remove { .. } if erase => None,
                    Op::Remove { set: s, key } => Some((2, set(s), key, 0)),
                }
            })
            .collect();
        ops.sort_unstable();
        ops.dedup();
        let mut canonical = Vec::with_capacity(64 + ops.len() * 24);
        canonical.push(self.kind.map_or(0, |k| k as u8));
        for text in [&self.tenant, &self.source, &self.reason] {
            put_text(&mut canonical, text);
        }
        canonical.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        for (tag, set, key, expires) in ops {
            canonical.push(tag);
            put_text(&mut canonical, set);
            canonical.extend_from_slice(&key.to_le_bytes());
            canonical.extend_from_slice(&expires.to_le_bytes());
        }
        if let Some(attempt) = &self.attempt {
            // The call and its counter; rules and TTL are the campaign's, not the caller's.
            put_text(&mut canonical, &attempt.call_id);
            put_text(&mut canonical, &attempt.scope);
            canonical.extend_from_slice(&attempt.fingerprint.to_le_bytes());
            canonical.push(attempt.outcome.map_or(0, |o| o as u8));
        }
        match key {
            Some(key) => PayloadDigest {
                key_tag: key.tag(),
                hash: key.digest(&canonical),
            },
            None => {
                let full = sha2::Sha256::digest(&canonical);
                let mut hash = [0; 16];
                hash.copy_from_slice(&full[..16]);
                PayloadDigest { key_tag: 0, hash }
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Mutation, DecodeError> {
        let mut reader = Reader { bytes, at: 0 };
        let format = reader.u8()?;
        if format != FORMAT && format != FORMAT_FLEET {
            return Err(DecodeError("unknown record format".into()));
        }
        let kind = MutationKind::from_code(reader.u8()?)
            .ok_or_else(|| DecodeError("unknown mutation kind".into()))?;
        let at_ms = reader.u64()? as i64;
        let mut texts = [(); 6].map(|_| String::new());
        for text in &mut texts {
            *text = reader.text()?;
        }
        let [request_id, tenant, source, reason, receipt_id, actor] = texts;
        let set_count = reader.u16()? as usize;
        let mut sets = Vec::with_capacity(set_count.min(64));
        for _ in 0..set_count {
            sets.push(reader.text()?);
        }
        let op_count = reader.u32()? as usize;
        // Each op takes at least 11 bytes: refuse counts the record cannot hold.
        if op_count > bytes.len() / 11 {
            return Err(DecodeError("operation count exceeds the record".into()));
        }
        let mut ops = Vec::with_capacity(op_count);
        for _ in 0..op_count {
            let tag = reader.u8()?;
            let set = reader.u16()?;
            if usize::from(set) >= sets.len() {
                return Err(DecodeError("operation names an unknown set".into()));
            }
            let key = reader.u64()?;
            ops.push(match tag {
                1 => {
                    let expires = match reader.u32()? as i32 {
                        i32::MIN => None,
                        day => Some(Day(day)),
                    };
                    Op::Add { set, key, expires }
                }
                2 => Op::Remove { set, key },
                _ => return Err(DecodeError("unknown operation".into())),
            });
        }
        let attempt = if kind.is_attempt() {
            if !ops.is_empty() {
                return Err(DecodeError("attempt record with set operations".into()));
            }
            Some(AttemptRecord::decode(&mut reader)?)
        } else {
            None
        };
        let stream_seq = if format == FORMAT_FLEET {
            match reader.u64()? {
                0 => return Err(DecodeError("fleet record without a stream sequence".into())),
                seq => seq,
            }
        } else {
            0
        };
        if reader.at != bytes.len() {
            return Err(DecodeError("trailing bytes".into()));
        }
        Ok(Mutation {
            kind: Some(kind),
            request_id,
            tenant,
            at_ms,
            source,
            reason,
            receipt_id,
            actor,
            sets,
            ops,
            stream_seq,
            attempt,
        })
    }
}

impl AttemptRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        put_text(out, &self.call_id);
        put_text(out, &self.scope);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.ttl_ms.to_le_bytes());
        out.push(self.outcome.map_or(0, |o| o as u8));
        out.push(self.rules.len().min(MAX_RULES) as u8);
        for rule in self.rules.iter().take(MAX_RULES) {
            out.extend_from_slice(&rule.cap.to_le_bytes());
            out.extend_from_slice(&rule.window_ms.to_le_bytes());
            out.push(rule.cooldowns.len().min(MAX_COOLDOWNS) as u8);
            for (outcome, ms) in rule.cooldowns.iter().take(MAX_COOLDOWNS) {
                out.push(*outcome as u8);
                out.extend_from_slice(&ms.to_le_bytes());
            }
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<AttemptRecord, DecodeError> {
        let call_id = reader.text()?;
        let scope = reader.text()?;
        let fingerprint = reader.u64()?;
        let ttl_ms = reader.u64()? as i64;
        let outcome = match reader.u8()? {
            0 => None,
            code => Some(
                Outcome::from_code(code).ok_or_else(|| DecodeError("unknown outcome".into()))?,
            ),
        };
        let bad = |what: &str| Err(DecodeError(format!("attempt record: {what}")));
        if call_id.is_empty() {
            return bad("empty call id");
        }
        if ttl_ms < 0 {
            return bad("negative reservation TTL");
        }
        let count = usize::from(reader.u8()?);
        if count > MAX_RULES {
            return bad("too many rules");
        }
        let mut rules = Vec::with_capacity(count);
        for _ in 0..count {
            let cap = reader.u32()?;
            let window_ms = reader.u64()? as i64;
            let cooldown_count = usize::from(reader.u8()?);
            if window_ms <= 0 || cooldown_count > MAX_COOLDOWNS {
                return bad("rule out of bounds");
            }
            let mut cooldowns = Vec::with_capacity(cooldown_count);
            for _ in 0..cooldown_count {
                let outcome = Outcome::from_code(reader.u8()?)
                    .ok_or_else(|| DecodeError("unknown outcome".into()))?;
                let ms = reader.u64()? as i64;
                if ms <= 0 {
                    return bad("cooldown out of bounds");
                }
                cooldowns.push((outcome, ms));
            }
            rules.push(Rule {
                cap,
                window_ms,
                cooldowns,
            });
        }
        Ok(AttemptRecord {
            call_id,
            scope,
            fingerprint,
            rules,
            ttl_ms,
            outcome,
        })
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let text = &text.as_bytes()[..text.len().min(MAX_TEXT)];
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| DecodeError("record ends early".into()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn text(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        if len > MAX_TEXT {
            return Err(DecodeError("text field too long".into()));
        }
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| DecodeError("text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Mutation {
        Mutation {
            kind: Some(MutationKind::Erase),
            request_id: "req-1".into(),
            tenant: "acme".into(),
            at_ms: 1_790_000_000_000,
            source: "phone".into(),
            reason: "art. 17 request".into(),
            receipt_id: "er-1".into(),
            actor: "ops".into(),
            sets: vec!["acme/consent".into(), "acme/erased".into()],
            ops: vec![
                Op::Remove {
                    set: 0,
                    key: 12015550123,
                },
                Op::Add {
                    set: 1,
                    key: 0xabcdef,
                    expires: None,
                },
                Op::Add {
                    set: 0,
                    key: 5,
                    expires: Some(Day(20_500)),
                },
            ],
            stream_seq: 0,
            attempt: None,
        }
    }

    fn reservation() -> Mutation {
        Mutation {
            kind: Some(MutationKind::ReserveAttempt),
            request_id: "reserve/call-1".into(),
            tenant: "acme".into(),
            at_ms: 1_790_000_000_000,
            actor: "dialer".into(),
            attempt: Some(AttemptRecord {
                call_id: "call-1".into(),
                scope: "campaign:outbound".into(),
                fingerprint: 0x0123_4567_89ab_cdef,
                rules: crate::rules::attempts::builtin_rule_sets()
                    .into_iter()
                    .flat_map(|s| s.rules)
                    .collect(),
                ttl_ms: 300_000,
                outcome: None,
            }),
            ..Mutation::default()
        }
    }

    #[test]
    fn attempt_records_round_trip_and_refuse_every_truncation() {
        for mut m in [reservation(), {
            let mut o = reservation();
            o.kind = Some(MutationKind::RecordOutcome);
            o.attempt.as_mut().unwrap().rules.clear();
            o.attempt.as_mut().unwrap().outcome = Some(Outcome::Refusal);
            o
        }] {
            for seq in [0, 77] {
                m.stream_seq = seq;
                let bytes = m.encode();
                assert_eq!(Mutation::decode(&bytes).unwrap(), m);
                for cut in 0..bytes.len() {
                    assert!(Mutation::decode(&bytes[..cut]).is_err(), "cut {cut}");
                }
            }
        }
        // The digest tells another call, number or outcome from a retry.
        let first = reservation();
        let mut other = first.clone();
        other.attempt.as_mut().unwrap().fingerprint ^= 1;
        assert!(
            other
                .payload_digest(None)
                .differs_from(&first.payload_digest(None))
        );
    }

    /// A record written before attempt kinds existed, byte by byte as that build wrote it:
    /// this build still reads it (the extension only added kinds).
    #[test]
    fn journals_written_before_attempt_records_stay_readable() {
        let mut old = vec![1u8, 1];
        old.extend_from_slice(&5i64.to_le_bytes());
        for text in ["r-1", "acme", "phone", "asked", "", "ops"] {
            old.extend_from_slice(&(text.len() as u16).to_le_bytes());
            old.extend_from_slice(text.as_bytes());
        }
        old.extend_from_slice(&1u16.to_le_bytes());
        old.extend_from_slice(&8u16.to_le_bytes());
        old.extend_from_slice(b"acme/dnc");
        old.extend_from_slice(&1u32.to_le_bytes());
        old.push(1);
        old.extend_from_slice(&0u16.to_le_bytes());
        old.extend_from_slice(&12015550123u64.to_le_bytes());
        old.extend_from_slice(&i32::MIN.to_le_bytes());
        let decoded = Mutation::decode(&old).unwrap();
        assert_eq!(decoded.kind, Some(MutationKind::Suppress));
        assert_eq!(decoded.attempt, None);
        assert_eq!(decoded.encode(), old, "and writes it the same way");
    }

    fn suppression(number: u64) -> Mutation {
        Mutation {
            kind: Some(MutationKind::Suppress),
            request_id: "req-2".into(),
            tenant: "acme".into(),
            at_ms: 1,
            source: "phone".into(),
            reason: "asked".into(),
            actor: "ops".into(),
            sets: vec!["acme/dnc".into()],
            ops: vec![Op::Add {
                set: 0,
                key: number,
                expires: None,
            }],
            ..Mutation::default()
        }
    }

    #[test]
    fn a_retry_has_the_digest_of_its_request_and_any_other_request_another() {
        let key = SecretKey::new("k", [7; 16]).unwrap();
        let first = suppression(12015550123);
        let digest = |m: &Mutation| m.payload_digest(Some(&key));
        // When, who and the receipt id differ between a request and its retry.
        let mut retry = first.clone();
        (retry.at_ms, retry.actor, retry.receipt_id) = (99, "other".into(), "er-9".into());
        assert_eq!(digest(&retry), digest(&first));
        let mut changes: Vec<Mutation> = Vec::new();
        changes.push(suppression(12015550124));
        let mut m = first.clone();
        m.kind = Some(MutationKind::Unsuppress);
        m.ops = vec![Op::Remove {
            set: 0,
            key: 12015550123,
        }];
        changes.push(m);
        let mut m = first.clone();
        m.sets = vec!["acme/consent".into()];
        changes.push(m);
        let mut m = first.clone();
        m.ops = vec![Op::Add {
            set: 0,
            key: 12015550123,
            expires: Some(Day(20_000)),
        }];
        changes.push(m);
        let mut m = first.clone();
        m.reason = "other reason".into();
        changes.push(m);
        let mut m = first.clone();
        m.tenant = "other".into();
        changes.push(m);
        for changed in &changes {
            assert!(digest(changed).differs_from(&digest(&first)), "{changed:?}");
        }
        // The order of numbers in a batch does not make another request.
        let mut two = suppression(1);
        two.ops.push(Op::Add {
            set: 0,
            key: 2,
            expires: None,
        });
        let mut swapped = two.clone();
        swapped.ops.reverse();
        assert_eq!(digest(&two), digest(&swapped));
    }

    #[test]
    fn digests_under_other_keys_are_not_comparable_and_an_erasure_is_what_it_adds() {
        let (a, b) = (
            SecretKey::new("a", [1; 16]).unwrap(),
            SecretKey::new("b", [2; 16]).unwrap(),
        );
        let m = suppression(12015550123);
        let other = suppression(12015550124);
        assert!(
            !m.payload_digest(Some(&a))
                .differs_from(&other.payload_digest(Some(&b)))
        );
        assert!(
            !m.payload_digest(Some(&a))
                .differs_from(&other.payload_digest(None))
        );
        assert!(
            m.payload_digest(None)
                .differs_from(&other.payload_digest(None))
        );
        // The same erasure after the tenant's plain sets changed: same digest.
        let erase = sample();
        let mut fewer_sets = erase.clone();
        fewer_sets.ops.retain(|op| matches!(op, Op::Add { .. }));
        assert_eq!(
            erase.payload_digest(Some(&a)),
            fewer_sets.payload_digest(Some(&a))
        );
        // Another person (another fingerprint added): another request.
        let mut other_person = erase.clone();
        other_person.ops[1] = Op::Add {
            set: 1,
            key: 0x123456,
            expires: None,
        };
        assert!(
            other_person
                .payload_digest(Some(&a))
                .differs_from(&erase.payload_digest(Some(&a)))
        );
    }

    #[test]
    fn round_trips() {
        let mutation = sample();
        assert_eq!(Mutation::decode(&mutation.encode()).unwrap(), mutation);
    }

    #[test]
    fn fleet_records_carry_their_stream_sequence_and_single_host_ones_stay_format_1() {
        let single = sample();
        let bytes = single.encode();
        assert_eq!(
            bytes[0], 1,
            "older builds must keep reading single-host journals"
        );
        let mut fleet = single.clone();
        fleet.stream_seq = 42;
        let fleet_bytes = fleet.encode();
        assert_eq!(fleet_bytes[0], 2);
        assert_eq!(fleet_bytes[1..fleet_bytes.len() - 8], bytes[1..]);
        assert_eq!(Mutation::decode(&fleet_bytes).unwrap(), fleet);
        assert_eq!(fleet.payload_digest(None), single.payload_digest(None));
        for cut in 0..fleet_bytes.len() {
            assert!(Mutation::decode(&fleet_bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut zero = fleet_bytes.clone();
        let end = zero.len();
        zero[end - 8..].fill(0);
        assert!(Mutation::decode(&zero).is_err());
    }

    #[test]
    fn refuses_every_truncation_and_bad_reference() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Mutation::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = sample();
        bad.ops.push(Op::Remove { set: 9, key: 1 });
        assert!(Mutation::decode(&bad.encode()).is_err());
    }
}
