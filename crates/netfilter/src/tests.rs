//! The filter state's element accounting and the exact text of the generated scripts.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;

use super::*;
use crate::script::{
    changes_digest, delete_table_script, digest_script, full_script, parse_digest, skeleton_script, table_digest,
};
use crate::state::disjoint_prefixes;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> Target {
    Target::new(ip(addr), Protocol::Tcp, port)
}

fn filter(masquerade: MasqueradeRule, bound: bool, ranges: &[&str], locals: &[(&str, u16)]) -> ServiceFilter {
    ServiceFilter {
        masquerade,
        bound,
        source_ranges: ranges.iter().map(|r| prefix(r)).collect(),
        local_endpoints: locals.iter().map(|(a, p)| (ip(a), *p)).collect(),
        short_circuit: None,
    }
}

fn set(elements: &[Element]) -> BTreeSet<Element> {
    elements.iter().copied().collect()
}

/// The sets hold prefixes as `ipnet` truncates them: the kernel's interval sets need the
/// network address, and containment decides which prefixes `disjoint_prefixes` keeps.
#[test]
fn prefixes_clear_host_bits_and_nest() {
    // (text, expected display, contains these, not these)
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        ("10.1.2.3/8", "10.0.0.0/8", &["10.200.0.0/16", "10.0.0.0/8"], &["11.0.0.0/8", "0.0.0.0/0", "::/0"]),
        ("0.0.0.0/0", "0.0.0.0/0", &["192.168.1.1/32", "10.0.0.0/8"], &["fd00::/8"]),
        ("fd00:1:2::7/48", "fd00:1:2::/48", &["fd00:1:2:3::/64"], &["fd00:1:3::/48", "fd00::/8"]),
        ("192.0.2.9/32", "192.0.2.9/32", &["192.0.2.9/32"], &["192.0.2.8/32"]),
    ];
    for (text, shown, inside, outside) in cases {
        let p = disjoint_prefixes([prefix(text)])[0];
        assert_eq!(p.to_string(), shown, "{text}");
        for q in inside {
            assert!(p.contains(&prefix(q)), "{text} contains {q}");
        }
        for q in outside {
            assert!(!p.contains(&prefix(q)), "{text} does not contain {q}");
        }
    }
    assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    assert!("::/129".parse::<IpNet>().is_err());
}

#[test]
fn disjoint_prefixes_keep_the_outermost() {
    let cases: [(&[&str], &[&str]); 3] = [
        (&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"], &["10.0.0.0/8"]),
        (&["10.1.0.0/16", "10.2.0.0/16", "10.1.0.0/16"], &["10.1.0.0/16", "10.2.0.0/16"]),
        (&["fd00::/16", "fd00:1::/32", "10.0.0.0/8"], &["10.0.0.0/8", "fd00::/16"]),
    ];
    for (given, expected) in cases {
        let got = disjoint_prefixes(given.iter().map(|p| prefix(p)));
        assert_eq!(got, expected.iter().map(|p| prefix(p)).collect::<Vec<_>>(), "{given:?}");
    }
}

/// Allowed sources live in a set per protocol (keyed without it); a restricted virtual server of
/// another protocol, which has no such set, admits no source rather than failing a write.
#[test]
fn allowed_sources_go_to_their_protocols_set() {
    let udp = Target::new(ip("203.0.113.10"), Protocol::Udp, 53);
    let other = Target::new(ip("203.0.113.10"), Protocol::Other(47), 0);
    let ranges = filter(MasqueradeRule::None, false, &["192.0.2.0/24"], &[]);
    let state = FilterState::from_services([(udp, ranges.clone()), (other, ranges)]);
    let names: Vec<(String, String)> =
        state.elements().map(|e| (crate::script::set_name(e), format!("{e:?}"))).collect();
    let allowed: Vec<&str> =
        names.iter().filter(|(n, _)| n.starts_with("source_allowed")).map(|(n, _)| n.as_str()).collect();
    assert_eq!(allowed, ["source_allowed_udp_v4"], "{names:?}");
    let restricted = names.iter().filter(|(n, _)| n == "source_restricted_v4").count();
    assert_eq!(restricted, 2, "both restricted: {names:?}");
}

#[test]
fn one_virtual_server_needs_these_elements() {
    let t = tcp("10.96.0.10", 80);
    let cases: [(&str, ServiceFilter, &[Element]); 5] = [
        ("masquerade all, not bound", filter(MasqueradeRule::All, false, &[], &[]), &[Element::MasqueradeAll(t)]),
        (
            "outside, bound",
            filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[]),
            &[Element::MasqueradeOutside(t), Element::Bound(t.addr), Element::ServicePort(t)],
        ),
        (
            "source ranges: nested ones merge, other family ignored",
            filter(MasqueradeRule::None, false, &["192.0.2.0/24", "192.0.2.128/25", "fd00::/8"], &[]),
            &[Element::SourceRestricted(t), Element::SourceAllowed(t, prefix("192.0.2.0/24"))],
        ),
        (
            // Upstream filters source ranges per family: a family without one is unrestricted.
            "only ranges of the other family: unrestricted",
            filter(MasqueradeRule::None, false, &["fd00::/8"], &[]),
            &[],
        ),
        (
            "hairpin: local endpoints of its family, with its protocol",
            filter(MasqueradeRule::None, false, &[], &[("10.244.1.2", 8080), ("fd00::2", 8080)]),
            &[Element::Hairpin(tcp("10.244.1.2", 8080))],
        ),
    ];
    for (name, f, expected) in cases {
        let mut state = FilterState::new();
        let changes = state.set(t, Some(f));
        assert_eq!(changes.added, set(expected), "{name}");
        assert!(changes.removed.is_empty(), "{name}");
        assert_eq!(state.elements().copied().collect::<BTreeSet<_>>(), set(expected), "{name}");
        let gone = state.set(t, None);
        assert_eq!((gone.removed, gone.added), (set(expected), BTreeSet::new()), "{name}: removal");
        assert_eq!(state.elements().len(), 0, "{name}");
    }
}

#[test]
fn shared_elements_go_with_their_last_user() {
    let cluster_ip = tcp("10.96.0.10", 80);
    let second_port = tcp("10.96.0.10", 443);
    let node_port = tcp("192.168.0.5", 30080);
    let pod = ("10.244.1.2", 8080);
    let mut state = FilterState::from_services([
        (cluster_ip, filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[pod])),
        (second_port, filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[])),
        (node_port, filter(MasqueradeRule::All, false, &[], &[pod])),
    ]);
    // (step, target, new filter, added, removed)
    type Step<'a> = (&'a str, Target, Option<ServiceFilter>, Vec<Element>, Vec<Element>);
    let steps: Vec<Step> = vec![
        (
            "the NodePort goes: its hairpin element stays for the ClusterIP",
            node_port,
            None,
            vec![],
            vec![Element::MasqueradeAll(node_port)],
        ),
        (
            "port 80 goes: the address stays bound for 443",
            cluster_ip,
            None,
            vec![],
            vec![
                Element::MasqueradeOutside(cluster_ip),
                Element::ServicePort(cluster_ip),
                Element::Hairpin(tcp("10.244.1.2", 8080)),
            ],
        ),
        (
            "443 changes masquerade only",
            second_port,
            Some(filter(MasqueradeRule::All, true, &[], &[])),
            vec![Element::MasqueradeAll(second_port)],
            vec![Element::MasqueradeOutside(second_port)],
        ),
        (
            "an unchanged filter changes nothing",
            second_port,
            Some(filter(MasqueradeRule::All, true, &[], &[])),
            vec![],
            vec![],
        ),
        (
            "443 goes: the address is unbound",
            second_port,
            None,
            vec![],
            vec![
                Element::MasqueradeAll(second_port),
                Element::Bound(second_port.addr),
                Element::ServicePort(second_port),
            ],
        ),
    ];
    for (name, target, f, added, removed) in steps {
        let changes = state.set(target, f);
        assert_eq!((changes.added, changes.removed), (set(&added), set(&removed)), "{name}");
    }
    assert!(state.is_empty() && state.elements().len() == 0);
}

#[test]
fn a_state_built_in_bulk_equals_one_built_entry_by_entry() {
    let cluster_ip = tcp("10.96.0.10", 80);
    let second_port = tcp("10.96.0.10", 443);
    let node_port = tcp("192.168.0.5", 30080);
    let pod = ("10.244.1.2", 8080);
    let entries = [
        (second_port, filter(MasqueradeRule::All, true, &[], &[])),
        (cluster_ip, filter(MasqueradeRule::OutsideClusterPrefixes, true, &["10.0.0.0/8"], &[pod])),
        (node_port, filter(MasqueradeRule::All, false, &[], &[pod])),
        // A later entry for a target replaces the earlier one, its elements with it.
        (second_port, filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[])),
    ];
    let mut one_by_one = FilterState::new();
    for (target, f) in entries.clone() {
        one_by_one.set(target, Some(f));
    }
    let mut bulk = FilterState::from_services(entries);
    assert_eq!(bulk, one_by_one);
    assert!(!bulk.elements().any(|e| *e == Element::MasqueradeAll(second_port)));
    // The counts came along: the shared hairpin and bound address go with their last users.
    assert!(bulk.set(node_port, None).removed.iter().all(|e| !matches!(e, Element::Hairpin(_))));
    let gone = bulk.set(cluster_ip, None);
    assert!(gone.removed.contains(&Element::Hairpin(tcp("10.244.1.2", 8080))), "{gone:?}");
    assert!(!gone.removed.contains(&Element::Bound(cluster_ip.addr)), "{gone:?}");
    assert!(bulk.set(second_port, None).removed.contains(&Element::Bound(cluster_ip.addr)));
    assert!(bulk.is_empty() && bulk.elements().len() == 0);
}

#[test]
fn update_cancels_a_delete_and_re_add_within_one_batch() {
    let a = tcp("10.96.0.10", 80);
    let b = tcp("10.96.0.11", 80);
    let pod = ("10.244.1.2", 8080);
    let mut state = FilterState::from_services([(a, filter(MasqueradeRule::None, false, &[], &[pod]))]);
    // The endpoint moves from a's Service to b's: the hairpin element never leaves the kernel.
    let changes = state.update([(a, None), (b, Some(filter(MasqueradeRule::None, false, &[], &[pod])))]);
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn diff_of_two_states_is_their_element_difference() {
    let a = tcp("10.96.0.10", 80);
    let b = tcp("fd00:96::10", 53);
    let old = FilterState::from_services([
        (a, filter(MasqueradeRule::All, true, &[], &[])),
        (b, filter(MasqueradeRule::None, true, &[], &[])),
    ]);
    let new = FilterState::from_services([(a, filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[]))]);
    let changes = old.diff(&new);
    assert_eq!(changes.added, set(&[Element::MasqueradeOutside(a)]));
    assert_eq!(changes.removed, set(&[Element::MasqueradeAll(a), Element::Bound(b.addr), Element::ServicePort(b)]));
    assert!(new.diff(&new).is_empty());
    assert_eq!(new.diff(&old).added, changes.removed);
}

#[test]
fn mark_bits() {
    let cases = [(14u8, Some(0x4000u32)), (0, Some(1)), (31, Some(0x8000_0000)), (32, None)];
    for (bit, mark) in cases {
        let config = FilterConfig { masquerade_bit: bit, ..FilterConfig::new(vec![]) };
        assert_eq!(config.mark(), mark, "bit {bit}");
        assert_eq!(skeleton_script(&config).is_some(), mark.is_some(), "bit {bit}");
    }
}

#[test]
fn skeleton_text() {
    let config = FilterConfig::new(vec![prefix("10.244.0.0/16"), prefix("10.244.3.0/24"), prefix("fd00:244::/48")]);
    let script = skeleton_script(&config).unwrap();
    if std::env::var_os("KIP_WRITE_FIXTURES").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/fixtures/skeleton.nft"), &script).unwrap();
    }
    assert_eq!(script, include_str!("fixtures/skeleton.nft"));
}

/// Issue 7, item 3: a family without cluster prefixes cannot tell pods from the rest by source;
/// as upstream without a local detector, host-originated traffic to a service address (whose
/// source the kernel picks as that address itself) is marked, so that replies from endpoints on
/// other nodes come back through this node.
#[test]
fn a_family_without_cluster_prefixes_masquerades_traffic_from_the_service_address() {
    let config = FilterConfig::new(vec![prefix("10.244.0.0/16")]);
    let script = skeleton_script(&config).unwrap();
    let mark = "meta mark set meta mark | 0x4000";
    let v4 = format!("ip saddr != @cluster_prefixes_v4 ip daddr . meta l4proto . th dport @masq_outside_v4 {mark}");
    let v6 = format!("ip6 saddr . meta l4proto . th dport @masq_outside_v6 {mark}");
    assert!(script.contains(&v4), "{script}");
    assert!(script.contains(&v6), "{script}");
    assert!(!script.contains("ip6 saddr != @cluster_prefixes_v6"), "{script}");
}

#[test]
fn changes_and_full_text() {
    let lb = Target::new(ip("203.0.113.10"), Protocol::Udp, 53);
    let v6 = Target::new(ip("fd00:96::10"), Protocol::Sctp, 9000);
    let state = FilterState::from_services([
        (tcp("10.96.0.10", 80), filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[("10.244.1.2", 8080)])),
        (lb, filter(MasqueradeRule::All, true, &["192.0.2.0/24", "198.51.100.7/32"], &[])),
        (v6, filter(MasqueradeRule::None, true, &[], &[("fd00:244:1::2", 9000)])),
    ]);
    let full = full_script("kube-ipvs-proxy", &state);
    if std::env::var_os("KIP_WRITE_FIXTURES").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/fixtures/full.nft"), &full).unwrap();
    }
    assert_eq!(full, include_str!("fixtures/full.nft"));
    assert_eq!(delete_table_script("kube-ipvs-proxy"), "delete table inet kube-ipvs-proxy\n");
}

/// The services of three states a sync could move between: (name, services).
fn digest_services() -> Vec<(&'static str, Vec<(Target, ServiceFilter)>)> {
    let lb = Target::new(ip("203.0.113.10"), Protocol::Udp, 53);
    let cluster_ip = filter(MasqueradeRule::OutsideClusterPrefixes, true, &[], &[("10.244.1.2", 8080)]);
    vec![
        ("empty", vec![]),
        ("one", vec![(tcp("10.96.0.10", 80), filter(MasqueradeRule::All, true, &[], &[]))]),
        (
            "three",
            vec![
                (tcp("10.96.0.10", 80), cluster_ip),
                (lb, filter(MasqueradeRule::All, false, &["192.0.2.0/24"], &[])),
                (tcp("fd00:96::10", 443), filter(MasqueradeRule::None, true, &["fd00::/8"], &[])),
            ],
        ),
    ]
}

fn digest_states() -> Vec<(&'static str, FilterState)> {
    digest_services().into_iter().map(|(name, services)| (name, FilterState::from_services(services))).collect()
}

#[test]
fn digest_depends_on_content_not_order() {
    let config = FilterConfig::new(vec![prefix("10.244.0.0/16")]);
    let states = digest_states();
    let digests: BTreeSet<u64> = states.iter().map(|(_, s)| table_digest(&config, s).unwrap()).collect();
    assert_eq!(digests.len(), states.len(), "distinct states, distinct digests");
    for (name, services) in digest_services() {
        let state = FilterState::from_services(services.clone());
        // The same services, set one by one in reverse order.
        let mut reversed = FilterState::new();
        reversed.update(services.into_iter().rev().map(|(t, f)| (t, Some(f))));
        assert_eq!(table_digest(&config, &reversed), table_digest(&config, &state), "{name}");
        let other = FilterConfig { masquerade_bit: 13, ..config.clone() };
        assert_ne!(table_digest(&other, &state), table_digest(&config, &state), "{name}: the mark bit counts");
        let prefixes = FilterConfig::new(vec![prefix("10.245.0.0/16")]);
        assert_ne!(table_digest(&prefixes, &state), table_digest(&config, &state), "{name}: the prefixes count");
    }
    let bad = FilterConfig { masquerade_bit: 32, ..config };
    assert_eq!(table_digest(&bad, &FilterState::new()), None);
}

#[test]
fn changes_move_the_digest_to_the_new_states() {
    let config = FilterConfig::new(vec![prefix("10.244.0.0/16")]);
    for (from_name, from) in digest_states() {
        for (to_name, to) in digest_states() {
            let changes = from.diff(&to);
            let moved = changes_digest(table_digest(&config, &from).unwrap(), &changes);
            assert_eq!(Some(moved), table_digest(&config, &to), "{from_name} -> {to_name}");
        }
    }
}

#[test]
fn digest_round_trips_through_nft_listing() {
    // nft's listing of the set, as nft 1.0.6 prints it.
    let cases = [0u64, 1, 0x1234_5678_0000_def0, u64::MAX];
    for digest in cases {
        let script = digest_script("t", digest);
        let element = script.lines().nth(1).unwrap().split_once("state_digest ").unwrap().1;
        let listing = format!(
            "table inet t {{\n\tset state_digest {{\n\t\ttype mark . mark\n\t\telements = {element}\n\t}}\n}}\n"
        );
        assert_eq!(parse_digest(&listing), Some(digest), "{digest:#x}: {listing}");
    }
    for listing in [
        "",
        "table inet t {\n\tset state_digest {\n\t\ttype mark . mark\n\t}\n}\n",
        "elements = { 0x1 }",
        "elements = { zz . 0x1 }",
    ] {
        assert_eq!(parse_digest(listing), None, "{listing:?}");
    }
}

/// Issue 7, item 2: a target with a short circuit needs its key in the set and its redirect in
/// the map, and both are written (the map after the sets).
#[test]
fn a_short_circuit_writes_its_key_and_its_map_entry() {
    let lb = tcp("203.0.113.7", 80);
    let filter =
        ServiceFilter { short_circuit: Some((ip("10.96.0.10"), 80)), ..filter(MasqueradeRule::None, true, &[], &[]) };
    let state = FilterState::from_services([(lb, filter)]);
    let elements: BTreeSet<Element> = state.elements().copied().collect();
    assert!(elements.contains(&Element::ShortCircuitKey(lb)));
    assert!(elements.contains(&Element::ShortCircuit(lb, ip("10.96.0.10"), 80)));
    let mut transaction = crate::elements::Transaction::new("kube-ipvs-proxy");
    transaction.changes(&FilterState::new().diff(&state));
    let (_, steps) = transaction.encode(0);
    let adds: Vec<&str> = steps.iter().filter(|(_, s)| s.verb == "add").map(|(_, s)| s.set.as_str()).collect();
    assert!(adds.contains(&"short_circuit_keys_v4") && adds.contains(&"short_circuit_v4"), "{steps:?}");
}

/// Issue 7, item 3: upstream's detectLocalMode. Pods are told by source (cluster or node CIDRs)
/// or by the interface their traffic arrives on, for masquerade and for the short circuit.
#[test]
fn pods_are_told_as_detect_local_mode_says() {
    let mark = "meta mark set meta mark | 0x4000";
    let dst = "ip daddr . meta l4proto . th dport";
    // (local detection, rule for traffic not from pods, rule for traffic from pods)
    let cases = [
        (LocalTraffic::Prefixes, "ip saddr != @cluster_prefixes_v4", "ip saddr @cluster_prefixes_v4"),
        (LocalTraffic::BridgeInterface("cbr0".into()), "iifname != \"cbr0\"", "iifname \"cbr0\""),
        (LocalTraffic::InterfaceNamePrefix("veth".into()), "iifname != \"veth*\"", "iifname \"veth*\""),
    ];
    for (local, not_pods, pods) in cases {
        let config = FilterConfig { local: local.clone(), ..FilterConfig::new(vec![prefix("10.244.0.0/16")]) };
        let script = skeleton_script(&config).unwrap();
        assert!(script.contains(&format!("{not_pods} {dst} @masq_outside_v4 {mark}")), "{local:?}:\n{script}");
        assert!(
            script.contains(&format!("nat_prerouting {pods} {dst} @short_circuit_keys_v4")),
            "{local:?}:\n{script}"
        );
    }
}
