//! The formatter against real ipvsadm: `tests/fixtures/ipvsadm_golden.txt` is what ipvsadm 1.31
//! printed in the VM for the table `ipvsadm_golden.sh` programs; [`golden_table`] is that table,
//! in the script's (unsorted) order.

use std::net::IpAddr;

use crate::{
    ConnectionCounts, Family, ForwardMethod, Info, Protocol, RealServer, RealServerEntry, RealServerId, ServiceFlags,
    Stats, Table, TunnelType, VirtualServer, VirtualServerEntry, VirtualServerId,
};

use super::order::{compare_real_servers, compare_virtual_servers, glibc_merge_sort};
use super::{Columns, ListFormat, listing};

const GOLDEN: &str = include_str!("../../tests/fixtures/ipvsadm_golden.txt");

/// The block of the golden file under `== {title}`.
fn golden(title: &str) -> String {
    let marker = format!("== {title}\n");
    let start = GOLDEN.find(&marker).map(|i| i + marker.len()).unwrap();
    let rest = &GOLDEN[start..];
    rest[..rest.find("== ").unwrap_or(rest.len())].to_string()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tuple(protocol: Protocol, addr: &str, port: u16) -> VirtualServerId {
    VirtualServerId::Tuple { protocol, addr: ip(addr), port }
}

fn service(id: VirtualServerId, scheduler: &str, flags: u32, timeout: u32, netmask: Option<u32>) -> VirtualServer {
    let mut server = VirtualServer::new(id, scheduler);
    // The kernel reports HASHED on every listed service; the format must ignore it.
    server.flags = ServiceFlags::from_bits_retain(flags) | ServiceFlags::HASHED;
    server.timeout = timeout;
    if let Some(netmask) = netmask {
        server.netmask = netmask;
    }
    server
}

fn real(addr: &str, port: u16, forward: ForwardMethod, weight: u32) -> RealServerEntry {
    let mut server = RealServer::new(ip(addr), port, weight);
    server.forward = forward;
    RealServerEntry { server, connections: ConnectionCounts::default(), stats: Stats::default() }
}

fn with_thresholds(mut entry: RealServerEntry, upper: u32, lower: u32) -> RealServerEntry {
    entry.server.upper_threshold = upper;
    entry.server.lower_threshold = lower;
    entry
}

const TUNNEL: ForwardMethod = ForwardMethod::Tunnel { tunnel: TunnelType::IpIp, port: 0, flags: 0 };
const PERSISTENT: u32 = ServiceFlags::PERSISTENT.bits();
const SCHED1: u32 = ServiceFlags::SCHED1.bits();
const SCHED2: u32 = ServiceFlags::SCHED2.bits();
const SCHED3: u32 = ServiceFlags::SCHED3.bits();

/// The table `ipvsadm_golden.sh` programs, in the kernel's dump order for the golden run (see
/// [`in_dump_order`]).
fn golden_table() -> Table {
    in_dump_order(programmed_table())
}

/// Reorders `table` as the golden file's `--nosort` listing shows the kernel dumped it. The
/// kernel hashes services with a per-boot value, so that order changes whenever the golden file
/// is regenerated; real servers come newest first. The sorted listings, the real test, depend
/// on this order only where ipvsadm's comparisons are cyclic.
fn in_dump_order(mut table: Table) -> Table {
    let dump = golden("-Ln --nosort");
    let lines: Vec<&str> = dump.lines().collect();
    let line_of = |entry: &VirtualServerEntry| {
        let mut line = String::new();
        super::write_virtual_server(&mut line, entry, ListFormat::default());
        lines.iter().position(|l| *l == line.trim_end()).unwrap_or_else(|| panic!("{line} not in the dump"))
    };
    table.services.sort_by_key(|(vs, _)| line_of(vs));
    for (vs, reals) in &mut table.services {
        let first = line_of(vs);
        let block: Vec<&str> = lines[first + 1..].iter().take_while(|l| l.starts_with("  -> ")).copied().collect();
        let position = |r: &RealServerEntry| {
            let name = format!("  -> {:<28} ", super::address_port(r.server.id.addr, r.server.id.port));
            block.iter().position(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name} not under {first}"))
        };
        reals.sort_by_key(position);
    }
    table
}

/// The table `ipvsadm_golden.sh` programs, in no particular order.
fn programmed_table() -> Table {
    use ForwardMethod::{Masquerade, Route};
    use Protocol::{Sctp, Tcp, Udp};
    let masq = |addr: &str| real(addr, 53, Masquerade, 1);
    let entries = vec![
        (
            service(tuple(Tcp, "192.168.0.10", 443), "wrr", PERSISTENT, 360, Some(0xffff_ff00)),
            vec![real("10.244.2.7", 8443, Masquerade, 3)],
        ),
        (service(tuple(Sctp, "10.0.0.20", 9000), "mh", SCHED2, 0, None), vec![real("10.244.4.1", 9000, Masquerade, 1)]),
        (
            service(tuple(Tcp, "10.0.0.1", 8080), "sh", SCHED1 | SCHED2, 0, None),
            vec![real("10.244.1.2", 8080, Route, 1)],
        ),
        (service(tuple(Tcp, "::1.2.3.4", 80), "rr", 0, 0, None), vec![]),
        (service(tuple(Tcp, "10.0.0.4", 80), "lc", SCHED1 | SCHED3 | PERSISTENT, 60, None), vec![]),
        (service(tuple(Tcp, "10.0.0.3", 80), "sh", SCHED3, 0, None), vec![]),
        (
            service(tuple(Tcp, "10.0.0.1", 80), "rr", 0, 0, None),
            vec![
                real("10.244.1.2", 80, Masquerade, 1),
                real("10.244.1.2", 8080, Masquerade, 0),
                real("192.168.5.1", 80, Masquerade, 70000),
                real("10.244.1.3", 8080, Masquerade, 1),
            ],
        ),
        (
            service(tuple(Tcp, "fd00::10", 80), "rr", PERSISTENT, 100, Some(64)),
            vec![real("fd00::1:1", 8080, Masquerade, 1), real("fd00::1:2", 8080, Masquerade, 1)],
        ),
        (service(tuple(Udp, "50.0.0.5", 53), "rr", 0, 0, None), vec![]),
        (service(tuple(Udp, "150.0.0.5", 53), "rr", 0, 0, None), vec![]),
        (
            service(tuple(Udp, "100.0.0.5", 53), "rr", 0, 0, None),
            ["220.0.0.1", "60.0.0.1", "150.0.0.1", "50.0.0.1", "250.0.0.1", "100.0.0.1", "10.0.0.1", "200.0.0.1"]
                .into_iter()
                .map(masq)
                .collect(),
        ),
        (service(tuple(Udp, "10.0.0.5", 53), "rr", 0, 0, None), vec![]),
        (service(tuple(Udp, "200.0.0.5", 53), "rr", 0, 0, None), vec![]),
        (
            service(tuple(Udp, "10.0.0.10", 53), "rr", ServiceFlags::ONE_PACKET.bits(), 0, None),
            vec![
                real("10.244.3.7", 53, ForwardMethod::Tunnel { tunnel: TunnelType::Gre, port: 0, flags: 1 }, 1),
                real("10.244.3.6", 53, ForwardMethod::Tunnel { tunnel: TunnelType::Gue, port: 6080, flags: 2 }, 1),
                real("127.0.0.1", 53, Masquerade, 1),
                with_thresholds(real("10.244.3.5", 53, Route, 2), 100, 10),
                real("10.244.3.4", 53, TUNNEL, 2),
            ],
        ),
        (service(VirtualServerId::Fwmark { family: Family::V4, mark: 3_000_000_000 }, "rr", 0, 0, None), vec![]),
        (
            service(VirtualServerId::Fwmark { family: Family::V4, mark: 7 }, "wlc", 0, 0, None),
            vec![real("10.244.5.1", 0, Route, 5)],
        ),
        (
            service(VirtualServerId::Fwmark { family: Family::V6, mark: 7 }, "rr", 0, 0, None),
            vec![real("fd00::2:1", 0, Masquerade, 1)],
        ),
    ];
    Table {
        services: entries
            .into_iter()
            .map(|(server, reals)| (VirtualServerEntry { server, stats: Stats::default() }, reals))
            .collect(),
    }
}

const INFO: Info = Info { version: 0x0001_0201, conn_table_size: 4096 };

fn no_comments(_: &VirtualServerId) -> Vec<String> {
    Vec::new()
}

#[test]
fn listings_match_real_ipvsadm_byte_for_byte() {
    let cases = [
        ("-Ln", ListFormat::default()),
        ("-Ln --nosort", ListFormat { nosort: true, ..ListFormat::default() }),
        ("-Ln --stats", ListFormat { columns: Columns::Stats, ..ListFormat::default() }),
        ("-Ln --rate", ListFormat { columns: Columns::Rate, ..ListFormat::default() }),
        ("-Ln --stats --exact", ListFormat { columns: Columns::Stats, exact: true, nosort: false }),
        ("-Ln --thresholds", ListFormat { columns: Columns::Thresholds, ..ListFormat::default() }),
        ("-Ln --persistent-conn", ListFormat { columns: Columns::PersistentConnections, ..ListFormat::default() }),
        ("-Ln --tun-info", ListFormat { columns: Columns::TunnelInfo, ..ListFormat::default() }),
    ];
    for (title, format) in cases {
        let printed = listing(&golden_table(), Some(&INFO), format, &no_comments);
        assert_eq!(printed, golden(title), "ipvsadm {title}");
    }
}

/// Where ipvsadm's comparators are a total order (no two addresses 2^31 or more apart), the
/// listing does not depend on the dump order.
#[test]
fn listing_does_not_depend_on_dump_order_where_the_order_is_total() {
    let mut table = golden_table();
    table.services.retain(|(vs, _)| match vs.server.id.addr() {
        Some(IpAddr::V4(a)) => a.octets()[0] == 10,
        _ => false,
    });
    let forward = listing(&table, Some(&INFO), ListFormat::default(), &no_comments);
    table.services.reverse();
    for (_, reals) in &mut table.services {
        reals.retain(|r| r.server.id.addr.to_string().starts_with("10."));
        reals.reverse();
    }
    let mut expected =
        forward.lines().filter(|l| !l.contains("192.168.") && !l.contains("127.0.0.1")).collect::<Vec<_>>().join("\n");
    expected.push('\n');
    assert_eq!(listing(&table, Some(&INFO), ListFormat::default(), &no_comments), expected);
}

/// With a cyclic "order" (10 < 100 < 200 < 10 in wrapped differences) the result depends on
/// the algorithm; the golden listing shows glibc's merge sort, which [`glibc_merge_sort`] replays.
/// (Rust's own sorts may panic on such a comparator, so using them here would be a bug.)
#[test]
fn cyclic_comparisons_come_out_as_glibc_sorts_them() {
    let sorted = golden("-Ln");
    let cyclic = sorted.lines().skip_while(|l| !l.starts_with("UDP  100.0.0.5:53")).skip(1).take(8);
    let addresses: Vec<&str> = cyclic.map(|l| l[5..].split(':').next().unwrap()).collect();
    let expected =
        ["200.0.0.1", "220.0.0.1", "250.0.0.1", "10.0.0.1", "50.0.0.1", "60.0.0.1", "100.0.0.1", "150.0.0.1"];
    assert_eq!(addresses, expected, "the golden file itself");
    let ours = listing(&golden_table(), Some(&INFO), ListFormat::default(), &no_comments);
    assert_eq!(ours, sorted);
}

#[test]
fn comments_follow_their_virtual_server_line() {
    let table = golden_table();
    let comments = |id: &VirtualServerId| match id {
        VirtualServerId::Tuple { addr, .. } if *addr == ip("10.0.0.10") => {
            vec!["service kube-system/kube-dns:dns".to_string()]
        }
        _ => Vec::new(),
    };
    let printed = listing(&table, None, ListFormat::default(), &comments);
    let expected_run = "UDP  10.0.0.10:53 rr ops\n#  service kube-system/kube-dns:dns\n  -> 10.244.3.4:53 ";
    assert!(printed.contains(expected_run), "{printed}");
    assert!(printed.starts_with("Prot LocalAddress:Port Scheduler Flags\n"), "no version line without info");
    assert_eq!(printed.matches("\n#  ").count(), 1);
}

/// Counters with real values: ipvsadm scales a column from 100 million up, truncating.
#[test]
fn counters_scale_like_ipvsadm() {
    let cases: [(u64, &str, &str); 9] = [
        (0, "        0", "        0"),
        (99_999_999, " 99999999", " 99999999"),
        (100_000_000, "  100000K", " 100000000"),
        (999_999_999, "  999999K", " 999999999"),
        (1_000_000_000, "    1000M", " 1000000000"),
        (99_999_999_999, "   99999M", " 99999999999"),
        (100_000_000_000, "     100G", " 100000000000"),
        (100_000_000_000_000, "     100T", " 100000000000000"),
        // Eight digits fill the column: no space is left before the number.
        (u64::MAX, "18446744T", " 18446744073709551615"),
    ];
    for (n, scaled, exact) in cases {
        for (is_exact, want) in [(false, scaled), (true, exact)] {
            let mut out = String::new();
            super::write_number(&mut out, n, is_exact);
            assert_eq!(out, want, "{n} exact={is_exact}");
        }
    }
}

#[test]
fn stats_lines_carry_each_counter_in_its_column() {
    let mut table = Table::default();
    let mut reals = vec![real("10.244.1.2", 8080, ForwardMethod::Masquerade, 1)];
    reals[0].stats =
        Stats { conns: 1, in_pkts: 2, out_pkts: 3, in_bytes: 4, out_bytes: 5_000_000_000, ..Stats::default() };
    reals[0].stats.cps = 123_456_789;
    reals[0].stats.in_bps = 123_456_789;
    let server = service(tuple(Protocol::Tcp, "10.0.0.1", 80), "rr", 0, 0, None);
    let stats = Stats { conns: 7, in_pkts: 123_456_789, ..Stats::default() };
    table.services.push((VirtualServerEntry { server, stats }, reals));
    let stats = listing(&table, None, ListFormat { columns: Columns::Stats, ..ListFormat::default() }, &no_comments);
    let rate = listing(&table, None, ListFormat { columns: Columns::Rate, ..ListFormat::default() }, &no_comments);
    let expected_stats = "TCP  10.0.0.1:80                         7  123456K        0        0        0\n  \
                          -> 10.244.1.2:8080                     1        2        3        4    5000M\n";
    // A destination's CPS, InPPS and OutPPS are printed unscaled; its byte rates are scaled.
    let expected_rate = "TCP  10.0.0.1:80                         0        0        0        0        0\n  \
                         -> 10.244.1.2:8080              123456789        0        0  123456K        0\n";
    assert!(stats.ends_with(expected_stats), "{stats}");
    assert!(rate.ends_with(expected_rate), "{rate}");
}

/// Connection counters are zero in the golden file (no traffic there); here each lands in its column.
#[test]
fn connection_counters_land_in_their_columns() {
    let mut entry = real("10.244.1.2", 8080, ForwardMethod::Masquerade, 3);
    entry.connections = ConnectionCounts { active: 12, inactive: 34, persistent: 56 };
    let server = service(tuple(Protocol::Tcp, "10.0.0.1", 80), "rr", 0, 0, None);
    let table = Table { services: vec![(VirtualServerEntry { server, stats: Stats::default() }, vec![entry])] };
    let cases = [
        (Columns::Thresholds, "  -> 10.244.1.2:8080              0          0          12         34        \n"),
        (
            Columns::PersistentConnections,
            "  -> 10.244.1.2:8080              3         56          12         34        \n",
        ),
        (Columns::TunnelInfo, "  -> 10.244.1.2:8080              Masq    n/a           3      12         34        \n"),
    ];
    for (columns, line) in cases {
        let printed = listing(&table, None, ListFormat { columns, ..ListFormat::default() }, &no_comments);
        assert!(printed.ends_with(line), "{columns:?}:\n{printed}");
    }
}

#[test]
fn active_and_inactive_connections_are_listed() {
    let mut entry = real("10.244.1.2", 8080, ForwardMethod::Local, 1);
    entry.connections = ConnectionCounts { active: 12, inactive: 4_000_000_000, persistent: 0 };
    let server = service(tuple(Protocol::Tcp, "10.0.0.1", 80), "rr", 0, 0, None);
    let table = Table { services: vec![(VirtualServerEntry { server, stats: Stats::default() }, vec![entry])] };
    let printed = listing(&table, None, ListFormat::default(), &no_comments);
    assert!(printed.ends_with("  -> 10.244.1.2:8080              Local   1      12         4000000000\n"), "{printed}");
}

/// ipvsadm's comparators subtract unsigned words and read the result as an int: addresses or
/// marks 2^31 or more apart compare backwards, which the golden output shows (192.168.5.1 first).
#[test]
fn comparators_keep_ipvsadms_wraparound() {
    let rs = |a: &str, port| RealServerId { addr: ip(a), port };
    let cases = [
        (rs("10.0.0.1", 80), rs("10.0.0.2", 80), -1),
        (rs("10.0.0.1", 80), rs("10.0.0.1", 81), -1),
        (rs("10.0.0.1", 80), rs("10.0.0.1", 80), 0),
        (rs("192.168.0.1", 80), rs("10.0.0.1", 80), -1),
        (rs("fd00::1", 80), rs("fd00::2", 80), -1),
        (rs("fd00::1", 80), rs("fd00::1", 79), 1),
    ];
    for (a, b, sign) in cases {
        assert_eq!(compare_real_servers(&a, &b).signum(), sign, "{a} vs {b}");
    }
    let fwm = |mark| VirtualServerId::Fwmark { family: Family::V4, mark };
    let tcp = tuple(Protocol::Tcp, "10.0.0.1", 80);
    assert!(compare_virtual_servers(&tcp, &fwm(7)) < 0, "tuples before small marks");
    assert!(compare_virtual_servers(&fwm(3_000_000_000), &tcp) < 0, "huge marks before tuples");
    assert!(compare_virtual_servers(&fwm(7), &VirtualServerId::Fwmark { family: Family::V6, mark: 7 }) < 0);
    let udp = tuple(Protocol::Udp, "10.0.0.1", 80);
    assert!(compare_virtual_servers(&tcp, &udp) < 0, "TCP (6) before UDP (17)");
}

#[test]
fn merge_sort_is_stable_and_sorts() {
    let mut items: Vec<(u32, usize)> = [5, 3, 5, 1, 3, 9, 0, 5].into_iter().zip(0..).collect();
    glibc_merge_sort(&mut items, &|a, b| a.0 as i32 - b.0 as i32);
    let expected = [(0, 6), (1, 3), (3, 1), (3, 4), (5, 0), (5, 2), (5, 7), (9, 5)];
    assert_eq!(items, expected);
}
