//! Byte-level tests of the codec: static arrays, commented per field, tested three ways (parse,
//! build, emit and compare). Property tests are in `props`.

use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, Emitable, NLM_F_ACK, NLM_F_REQUEST, ParseableParametrized};
use netlink_packet_generic::GenlHeader;

use super::constants::*;
use super::*;
use crate::{
    ConnectionCounts, Family, ForwardMethod, Protocol, RealServer, RealServerEntry, RealServerId, Stats, VirtualServer,
    VirtualServerId,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `NEW_SERVICE` for `TCP 10.0.0.1:80 rr`, flags 0 under a full mask, no persistence, /32.
#[rustfmt::skip]
static NEW_SERVICE: [u8; 104] = [
    // netlink header
    0x68, 0x00, 0x00, 0x00, // length 104
    0x25, 0x00,             // type: the IPVS family id (37 here)
    0x05, 0x00,             // flags: REQUEST | ACK
    0x07, 0x00, 0x00, 0x00, // sequence number 7
    0x00, 0x00, 0x00, 0x00, // port id 0 (the kernel fills it in)
    // generic netlink header
    0x01, 0x01, 0x00, 0x00, // cmd NEW_SERVICE, version 1, reserved
    // IPVS_CMD_ATTR_SERVICE, nested
    0x54, 0x00, 0x01, 0x80, // length 84, type 1 | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF = AF_INET (2), 2 bytes padding
    0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, // PROTOCOL = TCP (6), padding
    0x14, 0x00, 0x03, 0x00,                         // ADDR, 16 bytes:
    0x0a, 0x00, 0x00, 0x01,                         //   10.0.0.1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   rest of the union, zero
    0x00, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x04, 0x00, 0x00, 0x50, 0x00, 0x00, // PORT = 80, big-endian, padding
    0x07, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00, // SCHED_NAME = "rr\0", padding
    0x0c, 0x00, 0x07, 0x00,                         // FLAGS:
    0x00, 0x00, 0x00, 0x00,                         //   flags 0
    0xff, 0xff, 0xff, 0xff,                         //   mask all ones
    0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // TIMEOUT = 0
    0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, // NETMASK = 255.255.255.255 (big-endian mask)
];

fn tcp_10_0_0_1() -> VirtualServerId {
    VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: ip("10.0.0.1"), port: 80 }
}

#[test]
fn new_service_three_ways() {
    // Build: the message the client sends.
    let vs = VirtualServer::new(tcp_10_0_0_1(), "rr");
    let built = operation_message(&crate::Operation::AddVirtualServer(vs.clone()));
    // Emit and compare.
    let mut buf = Vec::new();
    let len = encode_request(&mut buf, 0x25, 7, NLM_F_REQUEST | NLM_F_ACK, built.clone());
    assert_eq!(len, NEW_SERVICE.len());
    assert_eq!(&buf[..], &NEW_SERVICE[..]);
    // Parse and compare with the built message, then with the domain value.
    let frame = frames(&NEW_SERVICE).next().unwrap().unwrap();
    assert_eq!((frame.seq, frame.message_type, frame.flags), (7, 0x25, NLM_F_REQUEST | NLM_F_ACK));
    let Reply::Message(parsed) = Reply::decode(&frame).unwrap() else { panic!("not an IPVS message") };
    assert_eq!(parsed, built);
    assert_eq!(virtual_server_entry(parsed.service().unwrap()).unwrap().server, vs);
}

/// A `NEW_DEST` dump entry as the kernel sends it: nests without `NLA_F_NESTED`, `STATS` with
/// 32-bit counters, `STATS64` with a `PAD`, an attribute unknown to us, and the tunnel fields.
#[rustfmt::skip]
pub(super) static DEST_ENTRY: [u8; 188] = [
    0x05, 0x01, 0x00, 0x00, // genl: cmd NEW_DEST, version 1
    0xb8, 0x00, 0x02, 0x00, // DEST nest, length 184, type 2 (no NLA_F_NESTED, as the kernel sends)
    0x14, 0x00, 0x01, 0x00,                         // ADDR, 16 bytes:
    0x0a, 0xf4, 0x01, 0x02,                         //   10.244.1.2
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00, // PORT = 8080, big-endian
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // FWD_METHOD = masquerade
    0x08, 0x00, 0x04, 0x00, 0x70, 0x11, 0x01, 0x00, // WEIGHT = 70000 (beyond 16 bits)
    0x08, 0x00, 0x05, 0x00, 0x64, 0x00, 0x00, 0x00, // U_THRESH = 100
    0x08, 0x00, 0x06, 0x00, 0x0a, 0x00, 0x00, 0x00, // L_THRESH = 10
    0x08, 0x00, 0x07, 0x00, 0x03, 0x00, 0x00, 0x00, // ACTIVE_CONNS = 3
    0x08, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, // INACT_CONNS = 4
    0x08, 0x00, 0x09, 0x00, 0x05, 0x00, 0x00, 0x00, // PERSIST_CONNS = 5
    0x18, 0x00, 0x0a, 0x00,                         // STATS nest, length 24:
    0x08, 0x00, 0x01, 0x00, 0x09, 0x00, 0x00, 0x00, //   CONNS = 9 (u32)
    0x0c, 0x00, 0x04, 0x00,                         //   INBYTES (u64):
    0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //     1000
    0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, // ADDR_FAMILY = AF_INET
    0x20, 0x00, 0x0c, 0x00,                         // STATS64 nest, length 32:
    0x0c, 0x00, 0x01, 0x00,                         //   CONNS (u64):
    0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //     10
    0x04, 0x00, 0x0b, 0x00,                         //   PAD, empty
    0x0c, 0x00, 0x04, 0x00,                         //   INBYTES (u64):
    0xd0, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //     2000
    0x08, 0x00, 0x63, 0x00, 0xde, 0xad, 0xbe, 0xef, // attribute 99: unknown, kept as Other
    0x05, 0x00, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_TYPE = IPIP, padding
    0x06, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_PORT = 0
    0x06, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_FLAGS = 0
];

fn dest_entry_attrs() -> Vec<DestAttr> {
    vec![
        DestAttr::Address(raw_address(&ip("10.244.1.2"))),
        DestAttr::Port(8080),
        DestAttr::ForwardMethod(IP_VS_CONN_F_MASQ),
        DestAttr::Weight(70000),
        DestAttr::UpperThreshold(100),
        DestAttr::LowerThreshold(10),
        DestAttr::ActiveConns(3),
        DestAttr::InactiveConns(4),
        DestAttr::PersistentConns(5),
        DestAttr::Stats(vec![StatsAttr::Conns(9), StatsAttr::InBytes(1000)]),
        DestAttr::AddressFamily(AF_INET),
        DestAttr::Stats64(vec![
            StatsAttr::Conns(10),
            StatsAttr::Other(DefaultNla::new(IPVS_STATS_ATTR_OUTBPS + 1, vec![])),
            StatsAttr::InBytes(2000),
        ]),
        DestAttr::Other(DefaultNla::new(99, vec![0xde, 0xad, 0xbe, 0xef])),
        DestAttr::TunnelType(IP_VS_CONN_F_TUNNEL_TYPE_IPIP),
        DestAttr::TunnelPort(0),
        DestAttr::TunnelFlags(0),
    ]
}

#[test]
fn dest_entry_parses_to_the_built_attributes_and_entry() {
    let header = GenlHeader { cmd: IPVS_CMD_NEW_DEST, version: 1 };
    let parsed = IpvsMessage::parse_with_param(&DEST_ENTRY[4..], header).unwrap();
    let built = IpvsMessage::new(IPVS_CMD_NEW_DEST, vec![IpvsAttr::Dest(dest_entry_attrs())]);
    assert_eq!(parsed, built);
    let entry = real_server_entry(parsed.dest().unwrap(), Family::V4).unwrap();
    let want = RealServerEntry {
        server: RealServer {
            id: RealServerId { addr: ip("10.244.1.2"), port: 8080 },
            weight: 70000,
            forward: ForwardMethod::Masquerade,
            upper_threshold: 100,
            lower_threshold: 10,
        },
        connections: ConnectionCounts { active: 3, inactive: 4, persistent: 5 },
        // STATS64 wins over STATS.
        stats: Stats { conns: 10, in_bytes: 2000, ..Stats::default() },
    };
    assert_eq!(entry, want);
}

#[test]
fn dest_entry_emits_like_the_kernel_apart_from_nesting_and_counter_width() {
    // Our encoder marks nests NLA_F_NESTED and writes 64-bit counters; everything else must be
    // byte-identical. Re-parse what we emit and compare structurally, and compare the bytes of
    // the flat attributes directly.
    let built = IpvsMessage::new(IPVS_CMD_NEW_DEST, vec![IpvsAttr::Dest(dest_entry_attrs())]);
    let mut emitted = vec![0u8; built.buffer_len()];
    built.emit(&mut emitted);
    let header = GenlHeader { cmd: IPVS_CMD_NEW_DEST, version: 1 };
    let reparsed = IpvsMessage::parse_with_param(&emitted[..], header).unwrap();
    // STATS counters come back as u64 values: equal as numbers.
    assert_eq!(reparsed, built);
    // ADDR..PERSIST_CONNS (first 84 bytes of the nest payload) are identical.
    assert_eq!(&emitted[..4], &[0xbc, 0x00, 0x02, 0x80]); // 4 more bytes: CONNS of STATS is u64 now
    assert_eq!(&emitted[4..88], &DEST_ENTRY[8..92]);
}

/// `GET_INFO`'s reply (`SET_INFO`): ids 1 and 2 mean version and table size here.
#[rustfmt::skip]
static INFO_REPLY: [u8; 20] = [
    0x0e, 0x01, 0x00, 0x00,                         // genl: cmd SET_INFO, version 1
    0x08, 0x00, 0x01, 0x00, 0x01, 0x02, 0x01, 0x00, // VERSION = 0x010201 (1.2.1)
    0x08, 0x00, 0x02, 0x00, 0x00, 0x10, 0x00, 0x00, // CONN_TAB_SIZE = 4096
];

#[test]
fn info_reply_three_ways() {
    let header = GenlHeader { cmd: IPVS_CMD_SET_INFO, version: 1 };
    let parsed = IpvsMessage::parse_with_param(&INFO_REPLY[4..], header).unwrap();
    let built = IpvsMessage::new(IPVS_CMD_SET_INFO, vec![IpvsAttr::Version(0x010201), IpvsAttr::ConnTableSize(4096)]);
    assert_eq!(parsed, built);
    let mut emitted = vec![0u8; built.buffer_len()];
    built.emit(&mut emitted);
    assert_eq!(&emitted[..], &INFO_REPLY[4..]);
    let info = info_from_message(&parsed);
    assert_eq!((info.version_string().as_str(), info.conn_table_size), ("1.2.1", 4096));
}

/// An error acknowledgement with `NETLINK_CAP_ACK`: the code and the request's header only.
#[rustfmt::skip]
static EEXIST_ACK: [u8; 36] = [
    0x24, 0x00, 0x00, 0x00, // length 36
    0x02, 0x00,             // type NLMSG_ERROR
    0x00, 0x01,             // flags NLM_F_CAPPED
    0x09, 0x00, 0x00, 0x00, // sequence number 9: the request's
    0x33, 0x00, 0x00, 0x00, // port id
    0xef, 0xff, 0xff, 0xff, // error -17 (EEXIST)
    0x68, 0x00, 0x00, 0x00, 0x25, 0x00, 0x05, 0x00, // the request's header
    0x09, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00,
];

#[test]
fn error_ack_decodes_to_its_errno_and_sequence() {
    let frame = frames(&EEXIST_ACK).next().unwrap().unwrap();
    assert_eq!(frame.seq, 9);
    let Reply::Ack(Some(code)) = Reply::decode(&frame).unwrap() else { panic!("not an error ack") };
    assert_eq!(code.get(), -17);
}

#[test]
fn fields_decode_by_family_not_by_length() {
    // The kernel always sends 16 address bytes; an IPv4 service must still be IPv4, and an
    // IPv4 persistence netmask is a big-endian mask while an IPv6 one is a prefix length.
    let cases: &[(Family, [u8; 4], u32, &str)] = &[
        (Family::V4, [0xff, 0xff, 0xff, 0x00], 0xffff_ff00, "10.0.0.1"),
        (Family::V6, 64u32.to_ne_bytes(), 64, "a00:1::"),
    ];
    for (family, netmask_bytes, netmask, addr) in cases {
        let attrs = vec![
            ServiceAttr::AddressFamily(if *family == Family::V4 { AF_INET } else { AF_INET6 }),
            ServiceAttr::Protocol(IPPROTO_UDP),
            ServiceAttr::Address(raw_address(&ip("10.0.0.1"))),
            ServiceAttr::Port(53),
            ServiceAttr::Netmask(u32::from_ne_bytes(*netmask_bytes)),
        ];
        let entry = virtual_server_entry(&attrs).unwrap();
        assert_eq!(entry.server.id.addr(), Some(ip(addr)), "{family:?}");
        assert_eq!(entry.server.netmask, *netmask, "{family:?}");
    }
}

#[test]
fn malformed_entries_are_errors_naming_the_problem() {
    let cases: Vec<(Vec<ServiceAttr>, &str)> = vec![
        (vec![ServiceAttr::Protocol(IPPROTO_TCP)], "without address family"),
        (vec![ServiceAttr::AddressFamily(7)], "unsupported address family 7"),
        (vec![ServiceAttr::AddressFamily(AF_INET), ServiceAttr::Protocol(IPPROTO_TCP)], "neither firewall mark"),
    ];
    for (attrs, text) in cases {
        let err = virtual_server_entry(&attrs).unwrap_err().to_string();
        assert!(err.contains(text), "{err:?} should contain {text:?}");
    }
    let dest_cases: Vec<(Vec<DestAttr>, &str)> = vec![
        (vec![DestAttr::Port(1)], "without address"),
        (vec![DestAttr::Address([0; 16]), DestAttr::ForwardMethod(0)], "without port"),
    ];
    for (attrs, text) in dest_cases {
        let err = real_server_entry(&attrs, Family::V4).unwrap_err().to_string();
        assert!(err.contains(text), "{err:?} should contain {text:?}");
    }
}

/// Values this crate does not name are kept as `Other`, not refused: one such entry must not
/// fail a whole dump. `DEST_ENTRY` with its forwarding method (byte 40) and tunnel type
/// (byte 168) patched, decoded through both paths; a service with protocol 1 (ICMP).
#[test]
fn unknown_kernel_values_decode_as_other() {
    let patched = |method: u8, tunnel: u8| {
        let mut bytes = DEST_ENTRY;
        assert_eq!((&bytes[36..40], &bytes[164..168]), (&[0x08, 0x00, 0x03, 0x00][..], &[0x05, 0x00, 0x0d, 0x00][..]));
        bytes[40] = method;
        bytes[168] = tunnel;
        bytes
    };
    let cases = [
        (patched(5, 0), ForwardMethod::Other(5)),
        (patched(2, 9), ForwardMethod::Tunnel { tunnel: crate::TunnelType::Other(9), port: 0, flags: 0 }),
    ];
    for (bytes, want) in cases {
        let entry = real_server_entry_from_nest(&bytes[8..], Family::V4).unwrap();
        assert_eq!(entry.server.forward, want);
        assert_paths_agree(&bytes[8..]);
        // And back: the raw values are written as they were read.
        let built = IpvsMessage::new(IPVS_CMD_NEW_DEST, vec![IpvsAttr::Dest(dest_attrs(&entry.server))]);
        let mut emitted = vec![0u8; built.buffer_len()];
        built.emit(&mut emitted);
        let reparsed = IpvsMessage::parse_with_param(&emitted[..], GenlHeader { cmd: IPVS_CMD_NEW_DEST, version: 1 });
        let again = real_server_entry(reparsed.unwrap().dest().unwrap(), Family::V4).unwrap();
        assert_eq!(again.server.forward, want);
    }
    let icmp = vec![
        ServiceAttr::AddressFamily(AF_INET),
        ServiceAttr::Protocol(1),
        ServiceAttr::Address(raw_address(&ip("10.0.0.1"))),
        ServiceAttr::Port(7),
    ];
    let entry = virtual_server_entry(&icmp).unwrap();
    assert_eq!(entry.server.id, VirtualServerId::Tuple { protocol: Protocol::Other(1), addr: ip("10.0.0.1"), port: 7 });
    assert_eq!(entry.server.id.to_string(), "proto-1 10.0.0.1:7");
}

/// The fast path must decode exactly what the typed path decodes, and fail where it fails.
pub(super) fn assert_paths_agree(nest: &[u8]) {
    let typed = parse_dest_attrs(nest).and_then(|a| real_server_entry(&a, Family::V4));
    let direct = real_server_entry_from_nest(nest, Family::V4);
    match (typed, direct) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("paths disagree: typed {a:?}, direct {b:?}"),
    }
}

#[test]
fn dest_entry_decodes_the_same_through_the_fast_path() {
    let mut msg = vec![0u8; 16];
    msg.extend_from_slice(&DEST_ENTRY);
    let total = msg.len() as u32;
    msg[..4].copy_from_slice(&total.to_ne_bytes());
    msg[4..6].copy_from_slice(&0x25u16.to_ne_bytes());
    let frame = frames(&msg).next().unwrap().unwrap();
    let nest = frame.attribute(IPVS_CMD_ATTR_DEST).unwrap().unwrap();
    assert_eq!(nest, &DEST_ENTRY[8..]);
    assert_eq!(frame.attribute(IPVS_CMD_ATTR_SERVICE).unwrap(), None);
    let entry = real_server_entry_from_nest(nest, Family::V4).unwrap();
    assert_eq!((entry.server.weight, entry.stats.conns, entry.connections.persistent), (70000, 10, 5));
    assert_paths_agree(nest);
    // Without statistics: the same server and connection counts, the statistics zero.
    let bare = real_server_entry_from_nest_with(nest, Family::V4, false).unwrap();
    assert_eq!((bare.server, bare.connections, bare.stats), (entry.server, entry.connections, Stats::default()));
}

#[test]
fn every_truncation_of_valid_input_decodes_without_panic() {
    let mut dest = vec![0u8; 16];
    dest.extend_from_slice(&DEST_ENTRY);
    let total = dest.len() as u32;
    dest[..4].copy_from_slice(&total.to_ne_bytes());
    dest[4..6].copy_from_slice(&0x25u16.to_ne_bytes());
    // (sample, decodes that succeed on it whole): the service message and its entry; the
    // destination message, its entry as read for either family (it carries its own address
    // family) and the direct path; nothing for an acknowledgement.
    for (sample, whole) in [(&NEW_SERVICE[..], 2), (&dest[..], 4), (&EEXIST_ACK[..], 0)] {
        assert_eq!(decode_any(sample), whole);
        for cut in 0..sample.len() {
            decode_any(&sample[..cut]);
            // Also with the length field still claiming the full size, and nested lengths lying.
            let mut lying = sample[..cut].to_vec();
            if lying.len() >= 4 {
                lying[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            decode_any(&lying);
        }
    }
}

mod props;
