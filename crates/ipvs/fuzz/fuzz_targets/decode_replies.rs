//! Feeds arbitrary bytes, as a received datagram, through every decoder the client uses on the
//! kernel's replies. Must never panic. `cargo +nightly fuzz run decode_replies`.
#![no_main]

use ipvs::Family;
use ipvs::wire::constants::IPVS_CMD_ATTR_DEST;
use ipvs::wire::{
    Reply, frames, info_from_message, real_server_entry, real_server_entry_from_nest,
    timeouts_from_message, virtual_server_entry,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    for frame in frames(datagram) {
        let Ok(frame) = frame else { continue };
        if let Ok(Reply::Message(m)) = Reply::decode(&frame) {
            if let Some(s) = m.service() {
                let _ = virtual_server_entry(s);
            }
            if let Some(d) = m.dest() {
                let _ = real_server_entry(d, Family::V4);
                let _ = real_server_entry(d, Family::V6);
            }
            let _ = info_from_message(&m);
            let _ = timeouts_from_message(&m);
        }
        // The allocation-free path the client takes for destination dumps.
        if let Ok(Some(nest)) = frame.attribute(IPVS_CMD_ATTR_DEST) {
            let _ = real_server_entry_from_nest(nest, Family::V4);
        }
    }
});
