//! Property tests: encode -> decode round trips for random values, and random or corrupted
//! input to the decoders.

use netlink_packet_core::{Emitable, NLM_F_REQUEST};
use proptest::prelude::*;

use super::super::constants::*;
use super::super::*;
use super::{DEST_ENTRY, assert_paths_agree};
use crate::{
    Family, ForwardMethod, Protocol, RealServer, RealServerId, ServiceFlags, Stats, TunnelType, VirtualServer,
    VirtualServerId,
};
use std::net::IpAddr;

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn arb_vs_id() -> impl Strategy<Value = VirtualServerId> {
    let proto = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)];
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    prop_oneof![
        (proto, arb_addr(), any::<u16>())
            .prop_map(|(protocol, addr, port)| { VirtualServerId::Tuple { protocol, addr, port } }),
        (family, 1..=u32::MAX).prop_map(|(family, mark)| VirtualServerId::Fwmark { family, mark }),
    ]
}

fn arb_vs() -> impl Strategy<Value = VirtualServer> {
    // The kernel's schedulers and names of others', which are held differently.
    let scheduler = prop_oneof![
        proptest::sample::select(crate::KNOWN_SCHEDULERS).prop_map(str::to_owned),
        "[a-z]{1,15}".prop_map(|s: String| s)
    ];
    (arb_vs_id(), scheduler, any::<u32>(), any::<u32>(), any::<u32>(), proptest::option::of("[a-z]{1,15}")).prop_map(
        |(id, scheduler, flags, timeout, netmask, pe_name)| VirtualServer {
            id,
            scheduler: scheduler.into(),
            flags: ServiceFlags::from_bits_retain(flags),
            timeout,
            netmask,
            pe_name,
        },
    )
}

fn arb_rs() -> impl Strategy<Value = RealServer> {
    let tunnel = prop_oneof![Just(TunnelType::IpIp), Just(TunnelType::Gue), Just(TunnelType::Gre)];
    let forward = prop_oneof![
        Just(ForwardMethod::Masquerade),
        Just(ForwardMethod::Local),
        Just(ForwardMethod::Route),
        (tunnel, any::<u16>(), any::<u16>())
            .prop_map(|(tunnel, port, flags)| { ForwardMethod::Tunnel { tunnel, port, flags } }),
    ];
    (arb_addr(), any::<u16>(), any::<u32>(), forward, any::<u32>(), any::<u32>()).prop_map(
        |(addr, port, weight, forward, upper_threshold, lower_threshold)| RealServer {
            id: RealServerId { addr, port },
            weight,
            forward,
            upper_threshold,
            lower_threshold,
        },
    )
}

/// Encodes `msg` as a request, then decodes it back through the client's path.
fn through_the_wire(msg: IpvsMessage) -> IpvsMessage {
    let mut buf = Vec::new();
    encode_request(&mut buf, 0x25, 1, NLM_F_REQUEST, msg);
    let frame = frames(&buf).next().unwrap().unwrap();
    match Reply::decode(&frame).unwrap() {
        Reply::Message(m) => m,
        other => panic!("decoded {other:?}"),
    }
}

proptest! {
    #[test]
    fn virtual_server_round_trips(vs in arb_vs()) {
        let back = through_the_wire(IpvsMessage::new(IPVS_CMD_NEW_SERVICE, vec![IpvsAttr::Service(service_attrs(&vs))]));
        let entry = virtual_server_entry(back.service().unwrap()).unwrap();
        prop_assert_eq!(entry.server, vs);
    }

    #[test]
    fn real_server_round_trips(rs in arb_rs(), vs in arb_vs_id()) {
        let msg = IpvsMessage::new(
            IPVS_CMD_NEW_DEST,
            vec![IpvsAttr::Service(service_id_attrs(&vs)), IpvsAttr::Dest(dest_attrs(&rs))],
        );
        let back = through_the_wire(msg);
        prop_assert_eq!(virtual_server_entry(back.service().unwrap()).unwrap().server.id, vs);
        // The family comes from ADDR_FAMILY, whatever the service's.
        let other = if vs.family() == Family::V4 { Family::V6 } else { Family::V4 };
        prop_assert_eq!(real_server_entry(back.dest().unwrap(), other).unwrap().server, rs);
    }

    #[test]
    fn stats_round_trip(s in any::<[u64; 10]>()) {
        let stats = Stats {
            conns: s[0], in_pkts: s[1], out_pkts: s[2], in_bytes: s[3], out_bytes: s[4],
            cps: s[5], in_pps: s[6], out_pps: s[7], in_bps: s[8], out_bps: s[9],
        };
        let attrs = stats_to_attrs(&stats);
        let mut buf = vec![0u8; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut buf);
        prop_assert_eq!(stats_from_attrs(&parse_stats_attrs(&buf).unwrap()), stats);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_any(&bytes);
    }

    #[test]
    fn fast_and_typed_paths_agree_on_corrupted_nests(
        flips in proptest::collection::vec((0usize..180, any::<u8>()), 0..6),
        cut in 0usize..=180,
    ) {
        let mut nest = DEST_ENTRY[8..].to_vec();
        for (at, byte) in flips {
            nest[at] = byte;
        }
        assert_paths_agree(&nest[..cut]);
    }

    #[test]
    fn fast_and_typed_paths_agree_on_encoded_real_servers(rs in arb_rs()) {
        let attrs = dest_attrs(&rs);
        let mut nest = vec![0u8; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut nest);
        assert_paths_agree(&nest);
        prop_assert_eq!(real_server_entry_from_nest(&nest, Family::V4).unwrap().server, rs);
    }

    #[test]
    fn corrupted_valid_messages_never_panic_the_decoders(
        flips in proptest::collection::vec((0usize..204, any::<u8>()), 1..8)
    ) {
        let mut dest = vec![0u8; 16];
        dest.extend_from_slice(&DEST_ENTRY);
        let total = dest.len() as u32;
        dest[..4].copy_from_slice(&total.to_ne_bytes());
        for (at, byte) in flips {
            dest[at % 204] = byte;
        }
        decode_any(&dest);
    }
}

proptest! {
    /// A listing entry decoded straight from its nest is the typed path's, statistics
    /// included; without statistics, the same server with zero statistics.
    #[test]
    fn service_nests_decode_with_or_without_statistics(vs in arb_vs(), s in any::<[u64; 10]>()) {
        let stats = Stats {
            conns: s[0], in_pkts: s[1], out_pkts: s[2], in_bytes: s[3], out_bytes: s[4],
            cps: s[5], in_pps: s[6], out_pps: s[7], in_bps: s[8], out_bps: s[9],
        };
        let mut attrs = service_attrs(&vs);
        attrs.push(ServiceAttr::Stats64(stats_to_attrs(&stats)));
        let mut nest = vec![0; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut nest);
        let typed = virtual_server_entry(&parse_service_attrs(&nest).unwrap()).unwrap();
        prop_assert_eq!(&typed.stats, &stats);
        prop_assert_eq!(&virtual_server_entry_from_nest(&nest, true).unwrap(), &typed);
        let bare = virtual_server_entry_from_nest(&nest, false).unwrap();
        prop_assert_eq!(&bare.server, &vs);
        prop_assert_eq!(bare.stats, Stats::default());
    }
}
