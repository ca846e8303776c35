//! Fixtures shared by the kernel-side VM tests: ids, a table with every kind of entry, and
//! normalization of what the kernel reads back for comparison with what was written.
#![allow(dead_code)] // each test binary uses its own part

use std::net::IpAddr;

use ipvs::{
    Family, ForwardMethod, Operation, Protocol, RealServer, ServiceFlags, Table, TunnelType, VirtualServer,
    VirtualServerId,
};

/// Why the VM tests are ignored on the host.
pub const VM_ONLY: &str = "needs the VM kernel: run integration/test";

pub fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn tuple(protocol: Protocol, a: &str, port: u16) -> VirtualServerId {
    VirtualServerId::Tuple { protocol, addr: addr(a), port }
}

pub fn tcp(a: &str, port: u16) -> VirtualServerId {
    tuple(Protocol::Tcp, a, port)
}

pub fn fwmark(family: Family, mark: u32) -> VirtualServerId {
    VirtualServerId::Fwmark { family, mark }
}

/// A virtual server as written: the kernel adds `HASHED` to what it reads back.
pub fn settable(mut vs: VirtualServer) -> VirtualServer {
    vs.flags = vs.flags.settable();
    vs
}

/// The configuration part of a table read back, order-independent: sorted virtual servers,
/// each with its sorted real servers, flags as written.
pub fn config_of(table: &Table) -> Vec<(VirtualServer, Vec<RealServer>)> {
    let mut config: Vec<_> = table
        .services
        .iter()
        .map(|(vs, reals)| {
            let mut reals: Vec<RealServer> = reals.iter().map(|r| r.server).collect();
            reals.sort();
            (settable(vs.server.clone()), reals)
        })
        .collect();
    config.sort();
    config
}

/// `spec` sorted the way [`config_of`] sorts.
pub fn sorted(mut spec: Vec<(VirtualServer, Vec<RealServer>)>) -> Vec<(VirtualServer, Vec<RealServer>)> {
    for (_, reals) in &mut spec {
        reals.sort();
    }
    spec.sort();
    spec
}

/// The operations creating `spec` from empty.
pub fn add_ops(spec: &[(VirtualServer, Vec<RealServer>)]) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (vs, reals) in spec {
        ops.push(Operation::AddVirtualServer(vs.clone()));
        ops.extend(reals.iter().map(|r| Operation::AddRealServer(vs.id, *r)));
    }
    ops
}

fn real(a: &str, port: u16, weight: u32, forward: ForwardMethod) -> RealServer {
    RealServer { forward, ..RealServer::new(addr(a), port, weight) }
}

fn with(vs: VirtualServer, flags: ServiceFlags, timeout: u32, netmask: u32) -> VirtualServer {
    VirtualServer { flags, timeout, netmask, ..vs }
}

/// A table with many kinds of entries: every scheduler the project uses (rr, wrr, sh and mh
/// with their port flags, lc, wlc), one-packet scheduling, persistence with netmasks, fwmark
/// in both families, SCTP, UDP, IPv6, masquerade / route / ipip and GUE tunnel forwarding,
/// thresholds and a weight of 70000.
pub fn rich_table() -> Vec<(VirtualServer, Vec<RealServer>)> {
    use ForwardMethod::{Masquerade as Masq, Route};
    let ipip = ForwardMethod::Tunnel { tunnel: TunnelType::IpIp, port: 0, flags: 0 };
    let gue = ForwardMethod::Tunnel { tunnel: TunnelType::Gue, port: 6080, flags: 0x1 };
    let thresholds = RealServer { upper_threshold: 100, lower_threshold: 10, ..real("10.244.9.2", 8080, 1, Masq) };
    vec![
        (
            VirtualServer::new(tcp("10.96.0.1", 443), "rr"),
            vec![real("10.244.1.2", 6443, 1, Masq), real("10.244.2.2", 6443, 1, Masq)],
        ),
        (
            VirtualServer::new(tcp("10.96.0.2", 80), "wrr"),
            vec![
                real("10.244.1.3", 8080, 1, Masq),
                real("10.244.2.3", 8080, 2, Masq),
                real("10.244.3.3", 8080, 70000, Masq),
            ],
        ),
        (
            with(
                VirtualServer::new(tcp("10.96.0.3", 80), "sh"),
                ServiceFlags::SCHED1 | ServiceFlags::SCHED2,
                0,
                0xffff_ffff,
            ),
            vec![real("10.244.1.4", 80, 1, Masq), real("10.244.2.4", 80, 1, Masq)],
        ),
        (
            with(VirtualServer::new(tcp("10.96.0.4", 80), "mh"), ServiceFlags::SCHED2, 0, 0xffff_ffff),
            vec![real("10.244.1.5", 80, 1, Masq), real("10.244.2.5", 80, 3, Masq)],
        ),
        (VirtualServer::new(tcp("10.96.0.5", 80), "lc"), vec![thresholds]),
        (
            VirtualServer::new(tcp("10.96.0.6", 8443), "wlc"),
            vec![real("10.244.1.6", 8443, 5, Route), real("10.244.2.6", 8443, 0, Masq)],
        ),
        (
            with(
                VirtualServer::new(tuple(Protocol::Udp, "10.96.0.10", 53), "rr"),
                ServiceFlags::ONE_PACKET,
                0,
                0xffff_ffff,
            ),
            vec![real("10.244.1.7", 53, 1, Masq), real("10.244.2.7", 53, 1, Masq)],
        ),
        (
            with(VirtualServer::new(tcp("10.96.0.7", 80), "rr"), ServiceFlags::PERSISTENT, 10800, 0xffff_ff00),
            vec![real("10.244.1.8", 80, 1, Masq)],
        ),
        (
            VirtualServer::new(fwmark(Family::V4, 100), "rr"),
            vec![real("10.244.1.9", 0, 1, Route), real("10.244.2.9", 0, 1, ipip)],
        ),
        (VirtualServer::new(fwmark(Family::V6, 200), "wlc"), vec![real("fd00:244:1::9", 0, 1, Route)]),
        (VirtualServer::new(tuple(Protocol::Sctp, "10.96.0.8", 3868), "rr"), vec![real("10.244.1.10", 3868, 1, Masq)]),
        (
            with(VirtualServer::new(tcp("fd00:96::1", 80), "rr"), ServiceFlags::PERSISTENT, 300, 64),
            vec![real("fd00:244:1::2", 8080, 1, Masq), real("fd00:244:2::2", 8080, 2, Masq)],
        ),
        (VirtualServer::new(tuple(Protocol::Udp, "fd00:96::a", 53), "sed"), vec![real("fd00:244:1::3", 53, 1, Masq)]),
        (
            VirtualServer::new(tcp("10.96.0.9", 80), "nq"),
            vec![real("10.244.1.11", 80, 1, ipip), real("10.244.2.11", 80, 1, gue)],
        ),
        (VirtualServer::new(tcp("10.96.0.11", 80), "rr"), vec![]),
    ]
}
