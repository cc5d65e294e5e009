//! The protobuf codec of every generated gRPC service (`build.rs` names it): prost, plus two
//! rules tonic's own codec lacks.
//!
//! - A malformed message (bad UTF-8 such as a lone UTF-16 surrogate, a truncated field) is the
//!   caller's fault: INVALID_ARGUMENT, like every other malformed input, not INTERNAL.
//! - A `CheckBatchRequest` carrying more numbers than [`max_batch`] is refused from a scan of
//!   its wire bytes before it is decoded, so an over-long batch of tiny strings never becomes
//!   a vector of `String`s. The byte size is bounded before this, by the decode limit the
//!   server derives from `server.max_batch` ([`crate::server::limits::grpc_decode_limit`]).
//!
//! The codec is built by generated code with `Default`, so it cannot carry a daemon's config:
//! the count limit is process-wide, the largest `server.max_batch` of any daemon started in
//! this process (one in production). Each handler still checks its own daemon's exact limit
//! after decoding.

use crate::proto::CheckBatchRequest;
use prost::Message;
use prost::bytes::Buf;
use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

/// 0 until a daemon starts: no count limit (clients decode responses only).
static MAX_BATCH: AtomicUsize = AtomicUsize::new(0);

/// Raises the process-wide count limit to a starting daemon's `server.max_batch`.
pub fn register_max_batch(max_batch: usize) {
    MAX_BATCH.fetch_max(max_batch, Ordering::Relaxed);
}

/// The count limit the decoder applies to `CheckBatchRequest`s.
pub fn max_batch() -> usize {
    match MAX_BATCH.load(Ordering::Relaxed) {
        0 => usize::MAX,
        limit => limit,
    }
}

/// prost encoding, with the decoder below.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { _type: PhantomData }
    }
}

/// Decodes with prost after the count scan; malformed input is INVALID_ARGUMENT.
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<CheckBatchRequest>() {
            let bytes = buf.chunk();
            // DecodeBuf is one contiguous buffer; scan only when it shows all of the message.
            if bytes.len() == buf.remaining() {
                let limit = max_batch();
                let scan = scan_batch(bytes);
                if let Some(scan) = &scan
                    && scan.count > limit
                {
                    return Err(Status::invalid_argument(format!(
                        "batch of {} numbers or locations exceeds the limit of {limit} (server.max_batch)",
                        scan.count
                    )));
                }
                if let Some(packed) = scan.and_then(|scan| scan.packed_e164) {
                    let request = decode_with_packed_e164(bytes, packed).map_err(malformed)?;
                    buf.advance(buf.remaining());
                    let request: Box<dyn std::any::Any> = Box::new(request);
                    // U is CheckBatchRequest (the TypeId says so): the downcast cannot fail.
                    return request
                        .downcast::<U>()
                        .map(|request| Some(*request))
                        .map_err(|_| Status::internal("codec type mismatch"));
                }
            }
        }
        U::decode(buf).map(Some).map_err(malformed)
    }
}

/// A whole `CheckBatchRequest` from its wire bytes, the packed `e164` run converted in bulk
/// when there is exactly one (what the daemon's decoder does); else prost alone. Same answer as
/// `CheckBatchRequest::decode` either way (unit tests, and the `grpc_batch_count` fuzz target).
pub fn decode_check_batch(bytes: &[u8]) -> Result<CheckBatchRequest, prost::DecodeError> {
    match scan_batch(bytes).and_then(|scan| scan.packed_e164) {
        Some(run) => decode_with_packed_e164(bytes, run),
        None => CheckBatchRequest::decode(bytes),
    }
}

fn malformed(error: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("malformed message: {error}"))
}

/// Decodes a `CheckBatchRequest` whose `e164` values are all in one packed run
/// (`bytes[values]`, its key and length starting at `key_start`): prost decodes everything
/// else, and the run is converted in bulk. prost itself reads packed `fixed64` one value at a
/// time through its buffer abstraction, which cost 7.5 % of the daemon's time under CheckStream
/// (BENCHMARKS.md, issue 18). Same result as `CheckBatchRequest::decode` (a unit test holds
/// the two to that).
fn decode_with_packed_e164(
    bytes: &[u8],
    PackedRun { key_start, values }: PackedRun,
) -> Result<CheckBatchRequest, prost::DecodeError> {
    let mut rest = Vec::with_capacity(bytes.len() - (values.end - key_start));
    rest.extend_from_slice(&bytes[..key_start]);
    rest.extend_from_slice(&bytes[values.end..]);
    let mut request = CheckBatchRequest::decode(&rest[..])?;
    request.e164 = bytes[values]
        .chunks_exact(8)
        .map(|value| u64::from_le_bytes(value.try_into().expect("chunks of 8")))
        .collect();
    Ok(request)
}

/// Reads a varint at `*at`, advancing it; None when cut short or over 10 bytes.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// How many numbers a wire-format `CheckBatchRequest` carries, or None when malformed.
pub fn batch_count(bytes: &[u8]) -> Option<usize> {
    scan_batch(bytes).map(|scan| scan.count)
}

/// What a scan of a `CheckBatchRequest`'s wire bytes found.
struct BatchScan {
    /// Numbers (`numbers`, field 3, one per occurrence; `e164`, field 4, fixed64 packed or
    /// not), or locations (field 7) if that is more: both become vectors of decoded values,
    /// so both are bounded by `max_batch`.
    count: usize,
    /// The `e164` values, when the message holds them as exactly one packed run of whole
    /// values (what every encoder sends); None otherwise, and then prost decodes it all.
    packed_e164: Option<PackedRun>,
}

/// Where a packed field lies in a message's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PackedRun {
    /// Where the field's key starts.
    key_start: usize,
    /// Its values.
    values: std::ops::Range<usize>,
}

/// Walks a `CheckBatchRequest`'s fields without allocating (a stack of open groups aside).
/// None when the bytes are malformed: prost then reports the fault.
fn scan_batch(bytes: &[u8]) -> Option<BatchScan> {
    let mut at = 0;
    let mut count = 0usize;
    let mut locations = 0usize;
    let mut e164_fields = 0usize;
    let mut packed = None;
    // Open groups (deprecated wire types 3 and 4): prost skips them as unknown fields, so
    // what they hold is not the message's and is not counted.
    let mut groups: Vec<u64> = Vec::new();
    while at < bytes.len() {
        let key_start = at;
        let key = varint(bytes, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        let top = groups.is_empty();
        if top && field == 4 {
            e164_fields += 1;
        }
        match wire {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => {
                at = at.checked_add(8).filter(|&end| end <= bytes.len())?;
                if top && field == 4 {
                    count += 1;
                }
            }
            2 => {
                let length = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let start = at;
                at = at.checked_add(length).filter(|&end| end <= bytes.len())?;
                match field {
                    3 if top => count += 1,
                    4 if top => {
                        count += length / 8;
                        if length % 8 == 0 {
                            packed = Some(PackedRun {
                                key_start,
                                values: start..at,
                            });
                        }
                    }
                    7 if top => locations += 1,
                    _ => {}
                }
            }
            3 => groups.push(field),
            4 => {
                if groups.pop() != Some(field) {
                    return None;
                }
            }
            5 => {
                at = at.checked_add(4).filter(|&end| end <= bytes.len())?;
            }
            _ => return None,
        }
    }
    groups.is_empty().then_some(BatchScan {
        count: count.max(locations),
        packed_e164: packed.filter(|_| e164_fields == 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_and_packed_numbers_like_prost() {
        let request = CheckBatchRequest {
            tenant: "acme".into(),
            campaign: "outbound".into(),
            numbers: vec![String::new(), "+12015550127".into(), "x".repeat(300)],
            e164: vec![12015550127; 7],
            batch_id: 99,
            // A field after the numbers (calling windows' instant) is skipped by the scan.
            at_unix_ms: 1_790_000_000_000,
            locations: vec![Default::default(); 4],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(batch_count(&bytes), Some(10));
        // Locations count when they are more than the numbers (each empty one is two bytes
        // on the wire and a vector entry once decoded).
        let hinted = CheckBatchRequest {
            e164: vec![12015550127; 2],
            locations: vec![Default::default(); 50],
            ..Default::default()
        };
        assert_eq!(batch_count(&hinted.encode_to_vec()), Some(50));
        // Unpacked fixed64 (wire type 1), as an old encoder may send.
        let mut unpacked = Vec::new();
        for _ in 0..3 {
            unpacked.push(0x21);
            unpacked.extend_from_slice(&1u64.to_le_bytes());
        }
        assert_eq!(batch_count(&unpacked), Some(3));
        assert_eq!(
            CheckBatchRequest::decode(&unpacked[..]).unwrap().e164.len(),
            3
        );
        // A group (wire types 3/4) of an unknown field is skipped by prost: what it holds
        // is not counted.
        let grouped = [75, 0x1a, 1, b'a', 76, 0x1a, 1, b'b'];
        let decoded = CheckBatchRequest::decode(&grouped[..]).unwrap();
        assert_eq!(decoded.numbers, ["b"]);
        assert_eq!(batch_count(&grouped), Some(1));
        assert_eq!(batch_count(&grouped[..4]), None, "an unclosed group");
        // Cut short anywhere: None, never a panic.
        for end in 0..bytes.len() {
            let _ = batch_count(&bytes[..end]);
        }
        assert_eq!(batch_count(&bytes[..bytes.len() - 1]), None);
    }

    /// The bulk path must decode exactly what prost decodes.
    fn same_as_prost(bytes: &[u8]) {
        let ours = decode_check_batch(bytes).map_err(|e| e.to_string());
        let prost = CheckBatchRequest::decode(bytes).map_err(|e| e.to_string());
        assert_eq!(ours.is_ok(), prost.is_ok(), "{ours:?} / {prost:?}");
        if let (Ok(ours), Ok(prost)) = (ours, prost) {
            assert_eq!(ours, prost);
        }
    }

    #[test]
    fn packed_numbers_decode_in_bulk_like_prost() {
        let request = CheckBatchRequest {
            tenant: "acme".into(),
            campaign: "outbound".into(),
            numbers: vec!["+12015550127".into()],
            e164: (0..1000).map(|i| 12_015_550_000 + i).collect(),
            batch_id: 7,
            at_unix_ms: 1_790_000_000_000,
            locations: vec![Default::default(); 2],
        };
        let bytes = request.encode_to_vec();
        let scan = scan_batch(&bytes).unwrap();
        let run = scan.packed_e164.clone().expect("one packed run");
        assert_eq!(run.values.len(), 8000);
        assert_eq!(decode_with_packed_e164(&bytes, run).unwrap(), request);
        same_as_prost(&bytes);
        // An empty run, and a run not the message's last field.
        let empty = CheckBatchRequest {
            tenant: "t".into(),
            ..Default::default()
        };
        let mut bytes = empty.encode_to_vec();
        bytes.extend_from_slice(&[0x22, 0]);
        bytes.extend_from_slice(&[0x28, 5]);
        same_as_prost(&bytes);
        assert!(scan_batch(&bytes).unwrap().packed_e164.is_some());
        // Two runs, an odd run, or an unpacked value: prost decodes them all (no bulk path).
        let mut two = request.encode_to_vec();
        two.extend_from_slice(&[0x22, 8, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(scan_batch(&two).unwrap().packed_e164.is_none());
        assert_eq!(
            CheckBatchRequest::decode(&two[..]).unwrap().e164.len(),
            1001
        );
        let odd = [0x22, 3, 1, 2, 3];
        assert!(scan_batch(&odd).unwrap().packed_e164.is_none());
        let mut mixed = request.encode_to_vec();
        mixed.push(0x21);
        mixed.extend_from_slice(&5u64.to_le_bytes());
        assert!(scan_batch(&mixed).unwrap().packed_e164.is_none());
        // Inside a group, field 4 is not the message's: the top-level run still decodes.
        let mut grouped = vec![75, 0x22, 8, 9, 9, 9, 9, 9, 9, 9, 9, 76];
        grouped.extend_from_slice(&request.encode_to_vec());
        same_as_prost(&grouped);
        assert!(scan_batch(&grouped).unwrap().packed_e164.is_some());
    }

    proptest::proptest! {
        /// Any bytes at all (an encoded request with bytes changed, cut or added): where the
        /// bulk path is taken it answers as prost does, error or request.
        #[test]
        fn bulk_decoding_agrees_with_prost_on_any_bytes(
            count in 0usize..40,
            edits in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..4),
            cut in 0usize..400,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ) {
            let request = CheckBatchRequest {
                tenant: "acme".into(),
                campaign: "c".into(),
                e164: (0..count as u64).map(|i| 48_600_000_000 + i).collect(),
                batch_id: 3,
                ..Default::default()
            };
            let mut bytes = request.encode_to_vec();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            bytes.truncate(cut.max(bytes.len().saturating_sub(cut % 8)));
            bytes.extend_from_slice(&tail);
            same_as_prost(&bytes);
        }
    }
}
