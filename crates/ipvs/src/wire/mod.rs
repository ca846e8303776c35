//! The IPVS wire codec: generic netlink messages of the `IPVS` family, pure and panic-free.
//!
//! Three layers, as in `netlink-packet-route`: netlink and attribute buffers (from
//! `netlink-packet-core`), the typed [`IpvsMessage`], and attribute enums ([`IpvsAttr`],
//! [`ServiceAttr`], [`DestAttr`], [`StatsAttr`]) that keep unknown attributes as `Other`.
//! Conversion functions map the attributes to and from the crate's domain types.

mod address;
pub mod constants;
mod dest;
mod frame;
mod message;
mod ops;
mod service;
mod stats;

pub use address::{RawAddress, address_of, raw_address};
pub use dest::{DestAttr, dest_attrs, dest_id_attrs, parse_dest_attrs, real_server_entry};
pub use frame::{
    Frame, Frames, Reply, encode_request, frames, info_from_message, timeouts_attrs, timeouts_from_message,
};
pub use message::{IpvsAttr, IpvsMessage};
pub use ops::{check_operation, operation_message};
pub use service::{FlagsMask, ServiceAttr, parse_service_attrs, service_attrs, service_id_attrs, virtual_server_entry};
pub use stats::{StatsAttr, parse_stats_attrs, stats_from_attrs, stats_to_attrs};

#[cfg(test)]
mod tests;
