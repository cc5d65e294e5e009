//! Arbitrary bytes as a message of the fleet stream: opened under the fleet keys (refused with
//! a reason unless sealed by one of them) and, were one to open, decoded as a mutation; a
//! sealed message with any one byte changed must not open. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::fleet::seal::{FleetKey, Sealer};
use suppressd::store::Mutation;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(vec![
        FleetKey::new("fuzz-new", [7; 32]).unwrap(),
        FleetKey::new("fuzz-old", [9; 32]).unwrap(),
    ])
    .unwrap();
    if let Ok(plain) = sealer.open("suppressd.fuzz.acme", data) {
        let _ = Mutation::decode(&plain);
    }
    let sealed = sealer.seal("suppressd.fuzz.acme", data);
    assert_eq!(sealer.open("suppressd.fuzz.acme", &sealed).unwrap(), data);
    if let Some(&first) = data.first() {
        let mut damaged = sealed.clone();
        let at = usize::from(first) % damaged.len();
        damaged[at] ^= 1;
        assert!(sealer.open("suppressd.fuzz.acme", &damaged).is_err());
    }
});
