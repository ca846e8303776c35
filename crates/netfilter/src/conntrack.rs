//! Forgetting connection-tracking entries over ctnetlink, as upstream's `CleanStaleEntries`
//! does with the `conntrack` program, without a process.
//!
//! A connectionless flow (UDP, SCTP) keeps its conntrack entry for as long as the client keeps
//! sending, and the entry carries its NAT binding: once the flow's real server is gone, or once
//! a service that had none gets one, the entry keeps steering the flow wrong. The kernel filters
//! a dump by destination and reply source itself (`CTA_FILTER`, Linux 5.9), so forgetting one
//! service address costs the matching entries, not a copy of the table; the matches are checked
//! again here, so a kernel that ignores the filter costs more but deletes nothing else.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

use crate::nfnetlink::{NfSocket, NfnetlinkError};

/// `CTA_FILTER` and its members (`linux/netfilter/nfnetlink_conntrack.h`): the crate has no
/// variant for them.
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
const FILTER_IP_SRC: u32 = 1 << 0;
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_SRC_PORT: u32 = 1 << 4;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;

/// The entries of flows to one service address: those whose original destination is
/// `destination`, and, when `reply_source` is set, whose replies come from it (one real server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StaleFlows {
    /// IP protocol number (17 UDP, 132 SCTP).
    pub protocol: u8,
    /// Where the flows were sent.
    pub destination: SocketAddr,
    /// Where their replies come from, if only one real server's flows are stale.
    pub reply_source: Option<SocketAddr>,
}

impl std::fmt::Display for StaleFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conntrack entries of protocol {} to {}", self.protocol, self.destination)?;
        if let Some(source) = self.reply_source {
            write!(f, " answered by {source}")?;
        }
        Ok(())
    }
}

/// A ctnetlink socket.
pub struct Conntrack {
    socket: NfSocket,
}

impl Conntrack {
    /// Opens a socket (needs `CAP_NET_ADMIN` to delete; the module `nf_conntrack_netlink`).
    pub fn open() -> Result<Conntrack, NfnetlinkError> {
        Ok(Conntrack { socket: NfSocket::open("ctnetlink")? })
    }

    /// Deletes the entries `flows` names; returns how many. An entry that goes away by itself
    /// meanwhile is not an error.
    pub async fn forget(&mut self, flows: &StaleFlows) -> Result<usize, NfnetlinkError> {
        let family = family_of(flows.destination.ip());
        let what = flows.to_string();
        let request = dump_request(flows);
        let (mut entries, mut dumped) = (Vec::new(), 0usize);
        let request = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), request);
        self.socket
            .exchange(request, NLM_F_REQUEST | NLM_F_DUMP, &what, |message| {
                dumped += 1;
                if let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = message
                    && let Some(original) = matching_original(&attributes, flows)
                {
                    entries.push(original);
                }
            })
            .await?;
        tracing::debug!(dumped, matching = entries.len(), "{what}");
        let mut deleted = 0;
        for original in entries {
            let request = ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(original)]);
            let request = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), request);
            match self.socket.exchange(request, NLM_F_REQUEST | NLM_F_ACK, &what, |_| {}).await {
                Ok(()) => deleted += 1,
                Err(NfnetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

fn family_of(addr: IpAddr) -> NetfilterProtoFamily {
    match addr {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

/// `IPCTNL_MSG_CT_GET`, which the crate names only for its typed form.
const IPCTNL_MSG_CT_GET: u8 = 1;

/// The filtered dump request. Its attributes go as raw ones: the crate's typed attribute sets
/// `NLA_F_NESTED` only on the kinds it knows, and the kernel parses `CTA_FILTER` strictly
/// (`EINVAL` without the flag).
fn dump_request(flows: &StaleFlows) -> ConntrackMessage {
    let attributes = filter_attributes(flows)
        .iter()
        .map(|a| {
            let mut bytes = vec![0; a.buffer_len()];
            a.emit(&mut bytes);
            DefaultNla::new(netlink_packet_core::Nla::kind(a) | if nested(a) { NLA_F_NESTED } else { 0 }, {
                let buffer = netlink_packet_core::NlaBuffer::new(&bytes[..]);
                buffer.value().to_vec()
            })
        })
        .collect();
    ConntrackMessage::Other { message_type: IPCTNL_MSG_CT_GET, attributes }
}

fn nested(a: &ConntrackAttribute) -> bool {
    match a {
        ConntrackAttribute::Other(nla) => netlink_packet_core::Nla::kind(nla) & NLA_F_NESTED != 0,
        _ => netlink_packet_core::Nla::is_nested(a),
    }
}

/// The dump request's attributes: the tuples to compare and which of their fields count.
fn filter_attributes(flows: &StaleFlows) -> Vec<ConntrackAttribute> {
    let protocol = Protocol::from(flows.protocol);
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(vec![
        Tuple::Ip(vec![IPTuple::DestinationAddress(flows.destination.ip())]),
        Tuple::Proto(vec![ProtoTuple::Protocol(protocol), ProtoTuple::DestinationPort(flows.destination.port())]),
    ])];
    let mut reply_flags = 0;
    if let Some(source) = flows.reply_source {
        attributes.push(ConntrackAttribute::CtaTupleReply(vec![
            Tuple::Ip(vec![IPTuple::SourceAddress(source.ip())]),
            Tuple::Proto(vec![ProtoTuple::Protocol(protocol), ProtoTuple::SourcePort(source.port())]),
        ]));
        reply_flags = FILTER_IP_SRC | FILTER_PROTO_NUM | FILTER_PROTO_SRC_PORT;
    }
    let orig_flags = FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT;
    let members = [
        DefaultNla::new(CTA_FILTER_ORIG_FLAGS, orig_flags.to_ne_bytes().to_vec()),
        DefaultNla::new(CTA_FILTER_REPLY_FLAGS, reply_flags.to_ne_bytes().to_vec()),
    ];
    let mut nested = vec![0; members.as_slice().buffer_len()];
    members.as_slice().emit(&mut nested);
    attributes.push(ConntrackAttribute::Other(DefaultNla::new(CTA_FILTER | NLA_F_NESTED, nested)));
    attributes
}

/// The original tuple of an entry `flows` names, or None for any other entry.
fn matching_original(attributes: &[ConntrackAttribute], flows: &StaleFlows) -> Option<Vec<Tuple>> {
    let original = attributes.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(t) => Some(t),
        _ => None,
    })?;
    let reply = attributes.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(t) => Some(t),
        _ => None,
    });
    let (protocol, _, destination) = endpoints(original)?;
    if protocol != flows.protocol || destination != Some(flows.destination) {
        return None;
    }
    if let Some(want) = flows.reply_source {
        let (_, source, _) = endpoints(reply?)?;
        if source != Some(want) {
            return None;
        }
    }
    Some(original.clone())
}

/// A tuple's protocol number, source and destination (addresses with ports).
fn endpoints(tuple: &[Tuple]) -> Option<(u8, Option<SocketAddr>, Option<SocketAddr>)> {
    let (mut protocol, mut src, mut dst, mut sport, mut dport) = (None, None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(fields) => {
                for field in fields {
                    match field {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let join = |a: Option<IpAddr>, p: Option<u16>| Some(SocketAddr::new(a?, p?));
    Some((protocol?, join(src, sport), join(dst, dport)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(dst: &str, reply: Option<&str>) -> StaleFlows {
        StaleFlows { protocol: 17, destination: dst.parse().unwrap(), reply_source: reply.map(|r| r.parse().unwrap()) }
    }

    /// An entry as the kernel dumps it: client 10.0.0.5:40053 to `dst`, answered by `reply_src`.
    fn entry(protocol: u8, dst: SocketAddr, reply_src: SocketAddr) -> Vec<ConntrackAttribute> {
        let client: SocketAddr = "10.0.0.5:40053".parse().unwrap();
        let tuple = |src: SocketAddr, dst: SocketAddr| {
            vec![
                Tuple::Ip(vec![IPTuple::SourceAddress(src.ip()), IPTuple::DestinationAddress(dst.ip())]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::from(protocol)),
                    ProtoTuple::SourcePort(src.port()),
                    ProtoTuple::DestinationPort(dst.port()),
                ]),
            ]
        };
        vec![
            ConntrackAttribute::CtaTupleOrig(tuple(client, dst)),
            ConntrackAttribute::CtaTupleReply(tuple(reply_src, client)),
            ConntrackAttribute::CtaMark(0),
        ]
    }

    #[test]
    fn only_the_named_entries_match() {
        let vip = "10.96.0.53:53".parse().unwrap();
        let rs1 = "10.244.1.2:8080".parse().unwrap();
        let rs2 = "10.244.2.2:8080".parse().unwrap();
        let to_service = udp("10.96.0.53:53", None);
        let from_rs1 = udp("10.96.0.53:53", Some("10.244.1.2:8080"));

        let e1 = entry(17, vip, rs1);
        assert_eq!(matching_original(&e1, &to_service), Some(e1.iter().find_map(original_of).unwrap()));
        assert!(matching_original(&e1, &from_rs1).is_some());
        assert!(matching_original(&entry(17, vip, rs2), &from_rs1).is_none(), "another real server's flow");
        assert!(matching_original(&entry(6, vip, rs1), &to_service).is_none(), "TCP is not UDP");
        let other_port = "10.96.0.53:54".parse().unwrap();
        assert!(matching_original(&entry(17, other_port, rs1), &to_service).is_none(), "another port");
        assert!(matching_original(&[ConntrackAttribute::CtaMark(1)], &to_service).is_none(), "no tuple");
    }

    fn original_of(a: &ConntrackAttribute) -> Option<Vec<Tuple>> {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => Some(t.clone()),
            _ => None,
        }
    }

    #[test]
    fn the_dump_request_carries_the_kernel_side_filter() {
        let attributes = filter_attributes(&udp("10.96.0.53:53", Some("10.244.1.2:8080")));
        let filter = attributes
            .iter()
            .find_map(|a| match a {
                ConntrackAttribute::Other(nla) if netlink_packet_core::Nla::kind(nla) & !NLA_F_NESTED == CTA_FILTER => {
                    Some(nla.clone())
                }
                _ => None,
            })
            .expect("a CTA_FILTER attribute");
        assert!(netlink_packet_core::Nla::is_nested(&filter), "the kernel parses CTA_FILTER strictly: NLA_F_NESTED");
        let mut bytes = vec![0; filter.buffer_len()];
        filter.emit(&mut bytes);
        // Header (4) then two u32 members of 8 bytes each: orig flags IP_DST|PROTO_NUM|DST_PORT,
        // reply flags IP_SRC|PROTO_NUM|SRC_PORT, in host order as NLA_U32 is.
        assert_eq!(bytes.len(), 4 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 0b10_1010);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 0b01_1001);
        assert!(attributes.iter().any(|a| matches!(a, ConntrackAttribute::CtaTupleReply(_))));
    }

    /// The bytes that go to the kernel: `CTA_FILTER` (25) keeps `NLA_F_NESTED` (the crate's typed
    /// attribute drops it, and the kernel then refuses the dump with `EINVAL`), the tuples too.
    #[test]
    fn the_request_on_the_wire_marks_every_nested_attribute() {
        let request = dump_request(&udp("10.96.0.53:53", None));
        let mut bytes = vec![0; request.buffer_len()];
        request.emit(&mut bytes);
        // Each attribute: length (u16), type (u16), value, padded to 4 bytes.
        let (mut kinds, mut at) = (Vec::new(), 0);
        while at < bytes.len() {
            let length = usize::from(u16::from_ne_bytes([bytes[at], bytes[at + 1]]));
            kinds.push(u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]));
            at += length.next_multiple_of(4);
        }
        assert_eq!(kinds, [1 | NLA_F_NESTED, CTA_FILTER | NLA_F_NESTED]);
    }
}
