//! Feeds arbitrary bytes, as a received datagram, through every decoder the client uses on the
//! kernel's replies ([`ipvs::wire::decode_any`], which the crate's own panic tests also run).
//! Must never panic. `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_replies` (or `cargo +nightly`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let _ = ipvs::wire::decode_any(datagram);
});
