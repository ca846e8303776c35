//! Every client call round-trips on the VM kernel: what is written is read back unchanged, for
//! IPv4 and IPv6, TCP, UDP, SCTP and fwmark virtual servers.

mod common;

use common::*;
use integration::in_netns;
use ipvs::{
    Client, Family, ForwardMethod, Protocol, RealServer, ServiceFlags, Timeouts, TunnelType, VirtualServer,
    VirtualServerId,
};

/// The 6.1 kernel's service table is shared by all network namespaces and a dump resumes by
/// position in it (the `ipvs` README): one test writing virtual servers while another dumps
/// makes that dump repeat or skip entries. The tests of this file take turns.
static TABLE_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn at the kernel's table.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    TABLE_TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One row: a virtual server, how it is then updated, and its real servers.
struct Case {
    vs: VirtualServer,
    updated: VirtualServer,
    reals: Vec<RealServer>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let v4_reals = |n: u8| -> Vec<RealServer> {
        vec![
            RealServer::new(addr(&format!("10.244.{n}.2")), 8080, 1),
            RealServer {
                forward: ForwardMethod::Route,
                ..RealServer::new(addr(&format!("10.244.{n}.3")), 8080, 70000)
            },
            RealServer {
                forward: ForwardMethod::Tunnel { tunnel: TunnelType::Gue, port: 6080, flags: 0x1 },
                upper_threshold: 50,
                lower_threshold: 5,
                ..RealServer::new(addr(&format!("10.244.{n}.4")), 8080, 3)
            },
        ]
    };
    let v6_reals = |n: u8| -> Vec<RealServer> {
        vec![
            RealServer::new(addr(&format!("fd00:244:{n}::2")), 8080, 1),
            RealServer {
                forward: ForwardMethod::Tunnel { tunnel: TunnelType::IpIp, port: 0, flags: 0 },
                ..RealServer::new(addr(&format!("fd00:244:{n}::3")), 8080, 2)
            },
        ]
    };
    let protocols = [(Protocol::Tcp, "rr"), (Protocol::Udp, "wrr"), (Protocol::Sctp, "lc")];
    for (n, (protocol, scheduler)) in protocols.into_iter().enumerate() {
        let n = n as u8 + 1;
        // IPv4: updated to persistence with a /24 netmask and another scheduler.
        let vs = VirtualServer::new(tuple(protocol, &format!("10.96.{n}.1"), 80), scheduler);
        let updated = VirtualServer {
            scheduler: "sh".into(),
            flags: ServiceFlags::PERSISTENT | ServiceFlags::SCHED2,
            timeout: 600,
            netmask: 0xffff_ff00,
            ..vs.clone()
        };
        cases.push(Case { vs, updated, reals: v4_reals(n) });
        // IPv6: updated to persistence with a /64 prefix.
        let vs = VirtualServer::new(tuple(protocol, &format!("fd00:96:{n}::1"), 443), scheduler);
        let updated = VirtualServer {
            scheduler: "mh".into(),
            flags: ServiceFlags::PERSISTENT,
            timeout: 60,
            netmask: 64,
            ..vs.clone()
        };
        cases.push(Case { vs, updated, reals: v6_reals(n) });
    }
    let vs = VirtualServer::new(fwmark(Family::V4, 7), "wlc");
    let updated = VirtualServer { scheduler: "rr".into(), flags: ServiceFlags::ONE_PACKET, ..vs.clone() };
    let reals = without_ports(v4_reals(8));
    cases.push(Case { vs, updated, reals });
    let vs = VirtualServer::new(fwmark(Family::V6, 8), "rr");
    let updated = VirtualServer {
        scheduler: "wlc".into(),
        flags: ServiceFlags::PERSISTENT,
        timeout: 30,
        netmask: 128,
        ..vs.clone()
    };
    let reals = without_ports(v6_reals(9));
    cases.push(Case { vs, updated, reals });
    cases
}

/// Real servers of a fwmark virtual server: the mark, not a port, selects the traffic, so they
/// have port 0.
fn without_ports(reals: Vec<RealServer>) -> Vec<RealServer> {
    reals.into_iter().map(|r| RealServer { id: ipvs::RealServerId { port: 0, ..r.id }, ..r }).collect()
}

async fn sorted_reals(c: &Client, id: &VirtualServerId) -> Vec<RealServer> {
    let mut reals: Vec<RealServer> = c.list_real_servers(id).await.unwrap().into_iter().map(|e| e.server).collect();
    reals.sort();
    reals
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn every_call_round_trips() {
    let _turn = turn();
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let cases = cases();
        for case in &cases {
            let id = case.vs.id;
            let at = |step: &str| format!("{id}: {step}");
            c.add_virtual_server(&case.vs).await.unwrap_or_else(|e| panic!("{}: {e}", at("add")));
            assert!(c.is_present(&id).await.unwrap(), "{}", at("is_present after add"));
            let got = c.get_virtual_server(&id).await.unwrap();
            assert_eq!(settable(got.server.clone()), case.vs, "{}", at("get after add"));
            assert!(got.server.flags.contains(ServiceFlags::HASHED), "{}", at("the kernel marks it hashed"));

            for r in &case.reals {
                c.add_real_server(&id, r).await.unwrap_or_else(|e| panic!("{}: {e}", at("add real server")));
            }
            let mut want = case.reals.clone();
            want.sort();
            assert_eq!(sorted_reals(&c, &id).await, want, "{}", at("list real servers after add"));

            c.update_virtual_server(&case.updated).await.unwrap_or_else(|e| panic!("{}: {e}", at("update")));
            let got = c.get_virtual_server(&id).await.unwrap();
            assert_eq!(settable(got.server), case.updated, "{}", at("get after update"));

            let changed = RealServer { weight: 9, upper_threshold: 20, lower_threshold: 2, ..case.reals[0] };
            c.update_real_server(&id, &changed).await.unwrap_or_else(|e| panic!("{}: {e}", at("update real server")));
            want = case.reals.clone();
            want[0] = changed;
            want.sort();
            assert_eq!(sorted_reals(&c, &id).await, want, "{}", at("list after real server update"));

            c.delete_real_server(&id, &changed.id)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", at("delete real server")));
            want.retain(|r| r.id != changed.id);
            assert_eq!(sorted_reals(&c, &id).await, want, "{}", at("list after real server delete"));
        }

        // Everything at once through the listing calls.
        let listed = c.list_virtual_servers().await.unwrap();
        let mut listed: Vec<VirtualServer> = listed.into_iter().map(|e| settable(e.server)).collect();
        listed.sort();
        let mut want: Vec<VirtualServer> = cases.iter().map(|c| c.updated.clone()).collect();
        want.sort();
        assert_eq!(listed, want, "list_virtual_servers");
        let table = c.table().await.unwrap();
        assert_eq!(table.services.len(), cases.len());
        for (vs, reals) in &table.services {
            assert_eq!(
                reals.len() + 1,
                cases.iter().find(|c| c.vs.id == vs.server.id).unwrap().reals.len(),
                "{}",
                vs.server.id
            );
        }

        for case in &cases {
            c.delete_virtual_server(&case.vs.id).await.unwrap();
            assert!(!c.is_present(&case.vs.id).await.unwrap(), "{} after delete", case.vs.id);
        }
        assert!(c.table().await.unwrap().services.is_empty());
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn info_timeouts_count_flush() {
    let _turn = turn();
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let info = c.info().await.unwrap();
        let banner = integration::ipvsadm(&["-Ln"]).unwrap();
        let first = banner.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!("IP Virtual Server version {} (size={})", info.version_string(), info.conn_table_size)
        );

        let set = Timeouts { tcp: 901, tcp_fin: 121, udp: 301 };
        c.set_timeouts(&set).await.unwrap();
        assert_eq!(c.timeouts().await.unwrap(), set);
        // Zero leaves a value unchanged.
        c.set_timeouts(&Timeouts { tcp: 0, tcp_fin: 0, udp: 77 }).await.unwrap();
        assert_eq!(c.timeouts().await.unwrap(), Timeouts { udp: 77, ..set });
        let shown = integration::ipvsadm(&["-L", "--timeout"]).unwrap();
        assert_eq!(shown.trim(), "Timeout (tcp tcpfin udp): 901 121 77");

        // The count is this namespace's alone (the other tests run beside this one, each in
        // its own, and the 6.1 kernel's service table is shared by all of them).
        let counter = ipvs::SockoptReader::open().unwrap();
        assert_eq!(counter.count().unwrap(), 0);
        for vs in rich_table() {
            c.add_virtual_server(&vs.0).await.unwrap();
        }
        // IPv4 ones only: the kernel keeps this count for its old socket-option interface,
        // which has no IPv6.
        let saved = integration::ipvsadm(&["-Sn"]).unwrap();
        let listed = saved.lines().filter(|l| l.starts_with("-A")).count();
        assert_eq!(listed, rich_table().len());
        let ipv6 = saved
            .lines()
            .filter(|l| l.starts_with("-A") && (l.contains('[') || l.ends_with(" -6") || l.contains(" -6 ")))
            .count();
        assert_eq!(ipv6, 3, "ipvsadm -Sn:\n{saved}");
        assert_eq!(counter.count().unwrap() as usize, listed - ipv6, "ipvsadm -Sn:\n{saved}");
        c.flush().await.unwrap();
        assert_eq!(counter.count().unwrap(), 0);
        assert!(c.list_virtual_servers().await.unwrap().is_empty());
        assert_eq!(integration::ipvsadm(&["-Sn"]).unwrap(), "");
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_long_listing_lets_other_tasks_run_between_its_datagrams() {
    let _turn = turn();
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        // 10,000 virtual servers: about a hundred datagrams of a dump, every one of them ready
        // as soon as the one before is read.
        let ops: Vec<ipvs::Operation> = (0..10_000u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0x0a60_0000 + i).into();
                ipvs::Operation::AddVirtualServer(VirtualServer::new(
                    VirtualServerId::Tuple { protocol: Protocol::Tcp, addr, port: 80 },
                    "rr",
                ))
            })
            .collect();
        assert!(c.apply(&ops).await.unwrap().iter().all(Result::is_ok));
        // The test's runtime has one thread: another task runs only when the listing yields.
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = tokio::spawn({
            let runs = runs.clone();
            async move {
                loop {
                    runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::task::yield_now().await;
        let before = runs.load(std::sync::atomic::Ordering::Relaxed);
        let listed = c.list_virtual_servers().await.unwrap();
        let during = runs.load(std::sync::atomic::Ordering::Relaxed) - before;
        counter.abort();
        assert_eq!(listed.len(), 10_000);
        assert!(during >= 5, "the other task ran {during} times during a listing of about a hundred datagrams");
        c.flush().await.unwrap();
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn listings_in_page_datagrams_read_what_large_ones_read() {
    let _turn = turn();
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let paged = Client::connect_with(ipvs::ClientOptions::default().with_page_datagrams()).await.unwrap();
        let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: "10.96.0.1".parse().unwrap(), port: 80 };
        let mut ops = vec![ipvs::Operation::AddVirtualServer(VirtualServer::new(id, "rr"))];
        // 300 real servers: some twenty page-sized datagrams of a dump.
        ops.extend((0..300u32).map(|i| {
            let addr = std::net::Ipv4Addr::from(0x0af4_0000 + i).into();
            ipvs::Operation::AddRealServer(id, RealServer::new(addr, 8080, 1 + i))
        }));
        assert!(c.apply(&ops).await.unwrap().iter().all(Result::is_ok));
        let large = c.list_real_servers(&id).await.unwrap();
        assert_eq!(large.len(), 300);
        assert_eq!(paged.list_real_servers(&id).await.unwrap(), large);
        assert_eq!(paged.list_virtual_servers().await.unwrap(), c.list_virtual_servers().await.unwrap());
        c.flush().await.unwrap();
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn real_servers_read_through_socket_options_are_what_the_netlink_listing_reads() {
    let _turn = turn();
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let reader = ipvs::SockoptReader::open().unwrap();
        let mut table = rich_table();
        // More real servers than a first read has room for, and a virtual server with none.
        let many = (0..100u8)
            .map(|i| RealServer::new(addr(&format!("10.244.{i}.9")), 8080, u32::from(i) + 1))
            .collect::<Vec<_>>();
        table.push((VirtualServer::new(tuple(Protocol::Tcp, "10.96.9.1", 80), "rr"), many));
        table.push((VirtualServer::new(tuple(Protocol::Udp, "10.96.9.2", 53), "rr"), Vec::new()));
        for (vs, reals) in &table {
            c.add_virtual_server(vs).await.unwrap();
            for rs in reals {
                c.add_real_server(&vs.id, rs).await.unwrap();
            }
        }
        let mut compared = 0;
        for (vs, _) in &table {
            let listed = c.list_real_servers(&vs.id).await.unwrap();
            let read = reader.real_servers(&vs.id);
            if vs.id.family() == Family::V6 {
                let err = read.unwrap_err();
                assert_eq!(err.kind(), ipvs::ErrorKind::AddressFamilyNotSupported, "{err}");
                continue;
            }
            let read = read.unwrap().unwrap_or_else(|| panic!("{} read as missing", vs.id));
            // The socket options carry no tunnel encapsulation, and leave out real servers of
            // the other family (IPv6 tunnel ends of an IPv4 virtual server).
            let expected: Vec<_> = listed
                .iter()
                .filter(|e| Family::of(&e.server.id.addr) == Family::V4)
                .map(|e| match e.server.forward {
                    ForwardMethod::Tunnel { .. } => (
                        RealServer {
                            forward: ForwardMethod::Tunnel { tunnel: TunnelType::IpIp, port: 0, flags: 0 },
                            ..e.server
                        },
                        e.connections,
                    ),
                    _ => (e.server, e.connections),
                })
                .collect();
            let got: Vec<_> = read.iter().map(|e| (e.server, e.connections)).collect();
            assert_eq!(got, expected, "{}", vs.id);
            compared += 1;
        }
        assert!(compared >= 8, "{compared} IPv4 virtual servers compared");
        assert_eq!(reader.real_servers(&tuple(Protocol::Tcp, "10.96.9.1", 80)).unwrap().map(|r| r.len()), Some(100));
        assert_eq!(reader.real_servers(&tuple(Protocol::Udp, "10.96.9.2", 53)).unwrap(), Some(Vec::new()));
        assert_eq!(
            reader.real_servers(&tuple(Protocol::Tcp, "10.96.9.3", 80)).unwrap(),
            None,
            "no such virtual server"
        );
        c.flush().await.unwrap();
    });
}
