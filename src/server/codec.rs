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
                if let Some(count) = batch_count(bytes)
                    && count > limit
                {
                    return Err(Status::invalid_argument(format!(
                        "batch of {count} numbers or locations exceeds the limit of {limit} (server.max_batch)"
                    )));
                }
            }
        }
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(format!("malformed message: {error}")))
    }
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

/// How many numbers a wire-format `CheckBatchRequest` carries (`numbers`, field 3, one per
/// occurrence; `e164`, field 4, fixed64 packed or not), or how many locations (field 7) if
/// that is more, without allocating: both become vectors of decoded values, so both are
/// bounded by `max_batch`. None when the bytes are malformed: prost then reports the fault.
pub fn batch_count(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut count = 0usize;
    let mut locations = 0usize;
    // Open groups (deprecated wire types 3 and 4): prost skips them as unknown fields, so
    // what they hold is not the message's and is not counted.
    let mut groups: Vec<u64> = Vec::new();
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        let top = groups.is_empty();
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
                at = at.checked_add(length).filter(|&end| end <= bytes.len())?;
                match field {
                    3 if top => count += 1,
                    4 if top => count += length / 8,
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
    groups.is_empty().then_some(count.max(locations))
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
}
