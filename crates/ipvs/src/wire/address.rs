//! The address, family and protocol fields shared by service and destination nests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::DecodeError;

use super::constants::*;
use crate::{Family, Protocol};

/// An address attribute's value as the kernel holds it: 16 bytes, IPv4 in the first 4.
pub type RawAddress = [u8; 16];

/// The 16 bytes the kernel expects for `addr` (`union nf_inet_addr`).
pub fn raw_address(addr: &IpAddr) -> RawAddress {
    let mut raw = [0u8; 16];
    match addr {
        IpAddr::V4(a) => raw[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => raw = a.octets(),
    }
    raw
}

/// Reads an address attribute's payload: 4 or 16 bytes (the kernel always sends 16).
pub fn parse_raw_address(payload: &[u8]) -> Result<RawAddress, DecodeError> {
    let mut raw = [0u8; 16];
    match payload.len() {
        4 | 16 => {
            raw[..payload.len()].copy_from_slice(payload);
            Ok(raw)
        }
        n => Err(DecodeError::from(format!("address attribute of {n} bytes (expected 4 or 16)"))),
    }
}

/// The address in `raw` read as `family`: the length cannot tell, the family attribute does.
pub fn address_of(raw: &RawAddress, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*raw)),
    }
}

/// `AF_INET` / `AF_INET6`.
pub fn family_number(family: Family) -> u16 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

/// The family an `AF_*` number names.
pub fn family_from_number(af: u16) -> Result<Family, DecodeError> {
    match af {
        AF_INET => Ok(Family::V4),
        AF_INET6 => Ok(Family::V6),
        other => Err(DecodeError::from(format!("unsupported address family {other}"))),
    }
}

/// `IPPROTO_*` of a protocol.
pub fn protocol_number(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
        Protocol::Other(n) => n,
    }
}

/// The protocol an `IPPROTO_*` number names; an unknown one is [`Protocol::Other`].
pub fn protocol_from_number(n: u16) -> Protocol {
    match n {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        IPPROTO_SCTP => Protocol::Sctp,
        other => Protocol::Other(other),
    }
}
