//! Arbitrary bytes as a `CheckBatchRequest` on the wire: the count the gRPC codec takes from
//! the raw bytes (to refuse an over-long batch before decoding it) never panics, and whenever
//! prost decodes the bytes, the count is exactly the numbers prost decoded, or the locations if
//! they are more (else an over-long batch could slip past the limit, or a good one be refused).
//! The daemon's decoding (packed `e164` converted in bulk) answers exactly as prost does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use suppressd::proto::CheckBatchRequest;
use suppressd::server::codec::{batch_count, decode_check_batch};

fuzz_target!(|data: &[u8]| {
    let counted = batch_count(data);
    let prost = CheckBatchRequest::decode(data);
    match (&prost, decode_check_batch(data)) {
        (Ok(theirs), Ok(ours)) => assert_eq!(theirs, &ours, "bulk decoding differs from prost"),
        (Err(_), Err(_)) => {}
        (theirs, ours) => panic!("prost {theirs:?}, bulk decoding {ours:?}"),
    }
    if let Ok(request) = prost {
        assert_eq!(
            counted,
            Some((request.numbers.len() + request.e164.len()).max(request.locations.len())),
            "count differs from what prost decoded"
        );
    }
});
