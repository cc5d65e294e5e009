//! The load generator's gRPC codec: pre-encoded requests out, verdict-only messages in.
//!
//! Keeps the generator cheap, so the figures describe the daemon: requests go out as the bytes
//! [`super::payloads`] encoded (a stream message gets its `batch_id` appended as one more
//! protobuf field, which is valid encoding), and answers are decoded into small local messages
//! holding only the verdicts, so strings the daemon sends for proof (set names, versions) are
//! skipped, not allocated. Also checks that an answer fits its request. Never sends or times
//! anything itself.

use super::payloads::Payload;
use super::tally::Verdicts;
use crate::proto;
use prost::bytes::BufMut;
use std::marker::PhantomData;
use std::sync::Arc;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};

/// A pre-encoded request; `batch_id` (when not 0) is appended as field 5 of CheckBatchRequest.
#[derive(Clone)]
pub(super) struct Outgoing {
    pub(super) bytes: Arc<[u8]>,
    pub(super) batch_id: u64,
}

pub(super) struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        write_outgoing(&item, dst);
        Ok(())
    }
}

fn write_outgoing(item: &Outgoing, dst: &mut impl BufMut) {
    dst.put_slice(&item.bytes);
    if item.batch_id != 0 {
        // CheckBatchRequest.batch_id = 5. Appending a field to an encoded message is valid
        // protobuf; the payloads themselves never set it.
        prost::encoding::uint64::encode(5, &item.batch_id, dst);
    }
}

/// Sends [`Outgoing`] bytes as they are and decodes answers into `U`.
pub(super) struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Outgoing;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// The part of `CheckResponse` the load generator reads; other fields are skipped unallocated.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UnaryAnswer {
    #[prost(int32, tag = "1")]
    pub(super) verdict: i32,
    #[prost(int32, repeated, tag = "2")]
    pub(super) reasons: Vec<i32>,
}

/// The part of `CheckBatchResponse` the load generator reads.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct BatchAnswer {
    #[prost(uint64, tag = "1")]
    pub(super) batch_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub(super) verdicts: Vec<u8>,
}

/// Counts the verdicts of one answer; `Err` when the answer does not fit its request.
pub(super) trait Answer: prost::Message + Default + Send + Sync + 'static {
    fn tally(&self, payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String>;
}

impl Answer for UnaryAnswer {
    fn tally(&self, _payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String> {
        if self
            .reasons
            .contains(&(proto::Reason::InvalidNumber as i32))
        {
            verdicts.invalid += 1;
        } else {
            verdicts.count(self.verdict);
        }
        Ok(())
    }
}

impl Answer for BatchAnswer {
    fn tally(&self, payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String> {
        if self.verdicts.len() != payload.numbers as usize {
            return Err(format!(
                "{} verdicts for {} numbers",
                self.verdicts.len(),
                payload.numbers
            ));
        }
        let mut counts = [0u64; 256];
        for &verdict in &self.verdicts {
            counts[verdict as usize] += 1;
        }
        for (verdict, &count) in counts.iter().enumerate() {
            if count > 0 {
                verdicts.add(verdict as i32, count);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_appended_as_a_valid_field() {
        let request = proto::CheckBatchRequest {
            tenant: "acme".into(),
            e164: vec![12015550123, 48601234567],
            ..Default::default()
        };
        let bytes: Arc<[u8]> = prost::Message::encode_to_vec(&request).into();
        let mut buffer = Vec::new();
        write_outgoing(
            &Outgoing {
                bytes: bytes.clone(),
                batch_id: 77,
            },
            &mut buffer,
        );
        let decoded: proto::CheckBatchRequest = prost::Message::decode(buffer.as_slice()).unwrap();
        assert_eq!(decoded.batch_id, 77);
        assert_eq!(decoded.e164, request.e164);
        assert_eq!(decoded.tenant, "acme");
        // Unary and batch requests go out untouched.
        let mut buffer = Vec::new();
        write_outgoing(
            &Outgoing {
                bytes: bytes.clone(),
                batch_id: 0,
            },
            &mut buffer,
        );
        assert_eq!(buffer, &bytes[..]);
    }

    #[test]
    fn answers_are_tallied_and_checked() {
        let payload = Payload {
            bytes: Arc::from(Vec::new()),
            numbers: 4,
            present: 1,
        };
        let mut verdicts = Verdicts::default();
        let answer = BatchAnswer {
            batch_id: 0,
            verdicts: vec![1, 1, 2, 3],
        };
        answer.tally(&payload, &mut verdicts).unwrap();
        assert_eq!(
            (verdicts.allow, verdicts.block, verdicts.invalid),
            (2, 1, 1)
        );
        let short = BatchAnswer {
            batch_id: 0,
            verdicts: vec![1],
        };
        assert!(short.tally(&payload, &mut verdicts).is_err());
        let mut verdicts = Verdicts::default();
        UnaryAnswer {
            verdict: 2,
            reasons: vec![6],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 2,
            reasons: vec![1],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 0,
            reasons: vec![],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 42,
            reasons: vec![],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        assert_eq!(
            verdicts,
            Verdicts {
                allow: 0,
                block: 1,
                invalid: 1,
                unspecified: 1,
                other: 1
            }
        );
    }

    #[test]
    fn unary_answers_skip_the_proof_fields() {
        let full = proto::CheckResponse {
            verdict: proto::Verdict::Block as i32,
            reasons: vec![proto::Reason::NationalRegistry as i32],
            matched_sets: vec!["us-dnc".into()],
            normalized_number: "+12015550123".into(),
            versions: vec![proto::SetVersion {
                set: "us-dnc".into(),
                version: 2,
            }],
            tenant: "acme".into(),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&full);
        let answer: UnaryAnswer = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(answer.verdict, proto::Verdict::Block as i32);
        assert_eq!(answer.reasons, vec![proto::Reason::NationalRegistry as i32]);
    }
}
