//! The IPVS wire codec: generic netlink messages of the `IPVS` family, pure and panic-free.
//!
//! Three layers, as in `netlink-packet-route`: netlink and attribute buffers (from
//! `netlink-packet-core`), the typed [`IpvsMessage`], and attribute enums ([`IpvsAttr`],
//! [`ServiceAttr`], [`DestAttr`], [`StatsAttr`]) that keep unknown attributes as `Other`.
//! Conversion functions map the attributes to and from the crate's domain types.

mod address;
// Some are used only by the client (feature `client`).
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) mod constants;
mod dest;
mod frame;
mod message;
mod ops;
mod service;
mod stats;

#[cfg(feature = "client")]
pub(crate) use address::protocol_number;
pub use address::{RawAddress, address_of, raw_address};
#[cfg(feature = "client")]
pub(crate) use dest::forward_method;
pub use dest::{
    DestAttr, dest_attrs, dest_id_attrs, parse_dest_attrs, real_server_entry, real_server_entry_from_nest,
    real_server_entry_from_nest_with,
};
pub use frame::{
    Frame, Frames, Reply, encode_request, frames, info_from_message, timeouts_attrs, timeouts_from_message,
};
pub use message::{IpvsAttr, IpvsMessage};
pub use ops::{check_operation, operation_message};
pub use service::{
    FlagsMask, ServiceAttr, parse_service_attrs, service_attrs, service_id_attrs, virtual_server_entry,
    virtual_server_entry_from_nest,
};
pub use stats::{StatsAttr, parse_stats_attrs, stats_from_attrs, stats_from_nest, stats_to_attrs};

/// Runs every decoder the client applies to a received datagram (framing, replies, virtual
/// and real server entries in both families, info, timeouts, the direct destination path) and
/// returns how many decodes succeeded. Never panics, whatever the bytes: the entry point of the
/// fuzz target and of the crate's panic tests, not an API.
#[doc(hidden)]
pub fn decode_any(datagram: &[u8]) -> usize {
    use crate::Family;
    let mut decoded = 0;
    let mut count = |ok: bool| decoded += usize::from(ok);
    for frame in frames(datagram) {
        let Ok(frame) = frame else { continue };
        if let Ok(Reply::Message(m)) = Reply::decode(&frame) {
            count(true);
            if let Some(s) = m.service() {
                count(virtual_server_entry(s).is_ok());
            }
            if let Some(d) = m.dest() {
                count(real_server_entry(d, Family::V4).is_ok());
                count(real_server_entry(d, Family::V6).is_ok());
            }
            // Both always yield a value (absent attributes stay 0); run them for their parsing.
            let _ = info_from_message(&m);
            let _ = timeouts_from_message(&m);
        }
        // The allocation-free path the client takes for destination dumps.
        if let Ok(Some(nest)) = frame.attribute(constants::IPVS_CMD_ATTR_DEST) {
            count(real_server_entry_from_nest(nest, Family::V4).is_ok());
        }
    }
    decoded
}

/// Parses every attribute of `payload` with `parse`, in one allocation: attributes are at least
/// 4 and mostly 8 bytes, so `len / 8` slots rarely need to grow (dump decoding is hot).
pub(crate) fn parse_nlas<A>(
    payload: &[u8],
    parse: impl Fn(&netlink_packet_core::NlaBuffer<&[u8]>) -> Result<A, netlink_packet_core::DecodeError>,
) -> Result<Vec<A>, netlink_packet_core::DecodeError> {
    let mut out = Vec::with_capacity(payload.len() / 8 + 1);
    for nla in netlink_packet_core::NlasIterator::new(payload) {
        out.push(parse(&nla?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
