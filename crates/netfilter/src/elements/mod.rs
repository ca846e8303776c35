//! Set elements over nfnetlink, without the `nft` program: one sync's element changes (or a
//! whole rewrite of the sets) as one nftables transaction, a batch of `NEWSETELEM` and
//! `DELSETELEM` messages between `BATCH_BEGIN` and `BATCH_END` sent in one `sendmsg`. The
//! kernel applies all of it or none.
//!
//! Keys are laid out as nftables stores them: a concatenation's fields each padded to 4 bytes
//! (an `inet_proto` is 1 byte then 3 of padding, an `inet_service` 2 bytes in network order then
//! 2), addresses in network order, marks in host order. An interval of a concatenation
//! (`source_allowed_*`: address, port, source) has its first key and its last (`KEY_END`), as
//! nft sends them.

//!
//! [`ElementBytes`] and the key layout are here; [`Transaction`] builds a batch and
//! [`ElementSocket`] runs it (and lists a set).

mod socket;
mod transaction;

use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;

use crate::state::{Element, Target};

pub(crate) use socket::{ElementSocket, with_socket};
pub(crate) use transaction::Transaction;

/// nfnetlink's subsystem number of nftables.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFTA_DATA_VALUE`: the attribute a key, key end or map value is nested in.
const NFTA_DATA_VALUE: u16 = 1;

/// One element as the kernel takes it (and lists it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ElementBytes {
    pub key: Vec<u8>,
    /// The last key of an interval of a concatenation.
    pub key_end: Option<Vec<u8>>,
    /// A map element's value.
    pub data: Option<Vec<u8>>,
}

fn addr(out: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend(a.octets()),
        IpAddr::V6(a) => out.extend(a.octets()),
    }
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Other(n) => u8::try_from(n).unwrap_or(u8::MAX),
    }
}

fn port(out: &mut Vec<u8>, port: u16) {
    out.extend(port.to_be_bytes());
    out.extend([0, 0]);
}

fn target(out: &mut Vec<u8>, t: &Target) {
    addr(out, &t.addr);
    out.extend([protocol_number(t.protocol), 0, 0, 0]);
    port(out, t.port);
}

/// The key (and key end, and map value) of `element`.
pub(crate) fn element_bytes(element: &Element) -> ElementBytes {
    let mut key = Vec::with_capacity(48);
    let (mut key_end, mut data) = (None, None);
    match element {
        Element::Bound(a) => addr(&mut key, a),
        Element::MasqueradeAll(t)
        | Element::MasqueradeOutside(t)
        | Element::ServicePort(t)
        | Element::SourceRestricted(t)
        | Element::ShortCircuitKey(t) => target(&mut key, t),
        Element::SourceAllowed(t, prefix) => {
            // The set is the protocol's own (see `script`): address, port, source.
            addr(&mut key, &t.addr);
            port(&mut key, t.port);
            let mut end = key.clone();
            addr(&mut key, &prefix.network());
            addr(&mut end, &last_address(prefix));
            key_end = Some(end);
        }
        Element::Hairpin(t) => {
            target(&mut key, t);
            addr(&mut key, &t.addr);
        }
        Element::ShortCircuit(t, to, to_port) => {
            target(&mut key, t);
            let mut value = Vec::with_capacity(20);
            addr(&mut value, to);
            port(&mut value, *to_port);
            data = Some(value);
        }
    }
    ElementBytes { key, key_end, data }
}

fn last_address(prefix: &IpNet) -> IpAddr {
    prefix.broadcast()
}

/// The digest set's one element: two marks, in host order.
fn digest_bytes(digest: u64) -> ElementBytes {
    let mut key = Vec::with_capacity(8);
    key.extend(((digest >> 32) as u32).to_ne_bytes());
    key.extend(((digest & 0xffff_ffff) as u32).to_ne_bytes());
    ElementBytes { key, key_end: None, data: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn t(addr: &str, protocol: Protocol, port: u16) -> Target {
        Target::new(addr.parse().unwrap(), protocol, port)
    }

    type Layout<'a> = Option<&'a [u8]>;

    /// The layouts of nftables' own types (the VM tests read what is written back with `nft`).
    #[test]
    fn keys_are_laid_out_as_nftables_stores_them() {
        let web = t("10.96.0.10", Protocol::Tcp, 80);
        // (element, key, key end, map value)
        let cases: [(Element, &[u8], Layout, Layout); 5] = [
            (Element::Bound("10.96.0.10".parse().unwrap()), &[10, 96, 0, 10], None, None),
            (Element::ServicePort(web), &[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0], None, None),
            (
                Element::Hairpin(t("10.244.1.2", Protocol::Udp, 53)),
                &[10, 244, 1, 2, 17, 0, 0, 0, 0, 53, 0, 0, 10, 244, 1, 2],
                None,
                None,
            ),
            (
                Element::SourceAllowed(web, "192.168.0.0/16".parse().unwrap()),
                &[10, 96, 0, 10, 0, 80, 0, 0, 192, 168, 0, 0],
                Some(&[10, 96, 0, 10, 0, 80, 0, 0, 192, 168, 255, 255]),
                None,
            ),
            (
                Element::ShortCircuit(web, "10.96.0.11".parse().unwrap(), 8443),
                &[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0],
                None,
                Some(&[10, 96, 0, 11, 0x20, 0xfb, 0, 0]),
            ),
        ];
        for (element, key, key_end, data) in cases {
            let got = element_bytes(&element);
            assert_eq!(got.key, key, "{element:?}");
            assert_eq!(got.key_end.as_deref(), key_end, "{element:?}");
            assert_eq!(got.data.as_deref(), data, "{element:?}");
        }
        let v6 = element_bytes(&Element::ServicePort(t("fd00::10", Protocol::Sctp, 9)));
        assert_eq!(v6.key.len(), 24);
        assert_eq!(&v6.key[16..], &[132, 0, 0, 0, 0, 9, 0, 0]);
    }
}
