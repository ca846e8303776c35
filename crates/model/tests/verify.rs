//! Scenarios: verification reads taken into the observed state, and the plan that repairs what
//! they found.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ipvs::{
    ConnectionCounts, Operation, RealServerEntry, RealServerId, ServiceFlags, Stats, VirtualServer, VirtualServerEntry,
    VirtualServerId,
};
use model::{Changes, GracefulRemovals, Model, Observed, Scope, Step};
use serde_json::json;

const T0: Duration = Duration::from_secs(1000);

fn model() -> Model {
    let web = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let db = service("db", json!({"clusterIP": "10.96.0.20", "ports": [{"port": 5432}]}));
    let web_eps =
        slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.0.1", NODE), ep("10.0.0.2", NODE)]));
    let db_eps = slice("db-1", "db", "IPv4", json!([{"port": 5432}]), json!([ep("10.0.1.1", NODE)]));
    model_of(&[web, db], &[web_eps, db_eps])
}

/// The kernel state after programming `m` from scratch, and that state as the kernel lists it
/// (with the `HASHED` flag the kernel adds).
fn programmed(m: &Model) -> (Observed, Vec<VirtualServer>) {
    let mut o = Observed::new();
    for step in m.plan(&Observed::new(), &Scope::All, &mut GracefulRemovals::new(), T0).steps {
        o.apply(&step);
    }
    let listed = o.virtual_servers().map(|(_, v)| kernel_entry(&v.server)).collect();
    (o, listed)
}

fn kernel_entry(server: &VirtualServer) -> VirtualServer {
    let mut server = server.clone();
    server.flags |= ServiceFlags::HASHED;
    server
}

fn dests_of(o: &Observed, id: &VirtualServerId, active: u32) -> Vec<RealServerEntry> {
    o.virtual_server(id)
        .map(|v| {
            v.real_servers
                .values()
                .map(|r| RealServerEntry {
                    server: r.server,
                    connections: ConnectionCounts { active, inactive: 0, persistent: 0 },
                    stats: Stats::default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn repair(m: &Model, o: &Observed, ids: &[VirtualServerId]) -> Vec<Step> {
    let mut changes = Changes::new();
    changes.virtual_servers.extend(ids.iter().copied());
    m.plan(o, &Scope::Only(changes), &mut GracefulRemovals::new(), T0).steps
}

#[test]
fn an_unchanged_kernel_verifies_clean_despite_the_kernels_own_flags() {
    let m = model();
    let (mut o, listed) = programmed(&m);
    let before = o.clone();
    let verified = o.verify_virtual_servers(&listed, |_| false);
    assert_eq!(verified, Default::default());
    for (id, _) in before.virtual_servers() {
        assert!(!o.verify_real_servers(&before.virtual_server(id).unwrap().server, &dests_of(&before, id, 0), false));
    }
    assert_eq!(o, before);
}

#[test]
fn a_virtual_server_deleted_by_someone_else_is_found_and_made_again() {
    let m = model();
    let (mut o, mut listed) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    listed.retain(|e| e.id != web);
    let verified = o.verify_virtual_servers(&listed, |_| false);
    assert_eq!(verified.missing, vec![web]);
    assert!(o.virtual_server(&web).is_some(), "kept until read back");
    // Read back: gone.
    o.remove_virtual_server(&web);
    let steps = repair(&m, &o, &verified.missing);
    assert!(matches!(&steps[0], Step::Kernel(Operation::AddVirtualServer(v)) if v.id == web), "{steps:?}");
    assert_eq!(steps.iter().filter(|s| matches!(s, Step::Kernel(Operation::AddRealServer(..)))).count(), 2);
}

/// A list that skipped a virtual server (a dump racing writes) proves nothing: read back as
/// recorded, it is no difference and the repair writes nothing.
#[test]
fn a_virtual_server_a_list_skipped_and_read_back_as_recorded_is_no_difference() {
    let m = model();
    let (mut o, mut listed) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    let entry =
        VirtualServerEntry { server: listed.iter().find(|e| e.id == web).unwrap().clone(), stats: Stats::default() };
    listed.retain(|e| e.id != web);
    let before = o.clone();
    assert_eq!(o.verify_virtual_servers(&listed, |_| false).missing, vec![web]);
    assert!(!o.verify_virtual_server(&entry, &dests_of(&before, &web, 0)));
    assert!(repair(&m, &o, &[web]).is_empty());

    // Read back altered (another scheduler, a real server fewer): a difference, repaired.
    let mut altered = entry.clone();
    altered.server.scheduler = "wlc".into();
    let dests = &dests_of(&before, &web, 0)[1..];
    assert!(o.verify_virtual_server(&altered, dests));
    let steps = repair(&m, &o, &[web]);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(matches!(&steps[0], Step::Kernel(Operation::UpdateVirtualServer(v)) if v.scheduler == "rr"), "{steps:?}");
    assert!(matches!(&steps[1], Step::Kernel(Operation::AddRealServer(..))), "{steps:?}");
}

#[test]
fn a_virtual_server_written_since_the_read_began_is_left_alone() {
    let m = model();
    let (mut o, mut listed) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    listed.retain(|e| e.id != web);
    // The read predates this proxy's own add: its absence proves nothing.
    let verified = o.verify_virtual_servers(&listed, |id| *id == web);
    assert_eq!(verified, Default::default());
    assert!(o.virtual_server(&web).is_some());
}

#[test]
fn an_altered_or_foreign_virtual_server_is_reported() {
    let m = model();
    let (mut o, mut listed) = programmed(&m);
    let db = tcp("10.96.0.20", 5432);
    for e in &mut listed {
        if e.id == db {
            e.scheduler = "wlc".into();
        }
    }
    let foreign = tcp("10.96.0.99", 80);
    listed.push(kernel_entry(&VirtualServer::new(foreign, "rr")));
    let verified = o.verify_virtual_servers(&listed, |_| false);
    assert_eq!((&verified.altered, &verified.missing, &verified.unknown), (&vec![db], &vec![], &vec![foreign]));
    assert!(o.virtual_server(&foreign).is_none(), "left out until its real servers are read");
    let steps = repair(&m, &o, &verified.altered);
    assert!(
        matches!(&steps[..], [Step::Kernel(Operation::UpdateVirtualServer(v))] if v.scheduler == "rr"),
        "{steps:?}"
    );
    // Read, it is observed, and a ClusterIP-range address bound by nobody is not this proxy's.
    assert!(o.verify_real_servers(&VirtualServer::new(foreign, "rr"), &[], true));
    assert!(o.virtual_server(&foreign).is_some());
}

#[test]
fn real_servers_deleted_or_altered_by_someone_else_are_found_and_repaired() {
    let m = model();
    let (mut o, _) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    let server = o.virtual_server(&web).unwrap().server.clone();
    let mut dests = dests_of(&o, &web, 0);
    dests.remove(0);
    assert!(o.verify_real_servers(&server, &dests, false));
    let steps = repair(&m, &o, &[web]);
    assert_eq!(
        steps,
        vec![Step::Kernel(Operation::AddRealServer(web, ipvs::RealServer::new(ip("10.0.0.1"), 8080, 1)))]
    );

    let (mut o, _) = programmed(&m);
    let mut dests = dests_of(&o, &web, 0);
    dests[1].server.weight = 7;
    assert!(o.verify_real_servers(&server, &dests, false));
    let steps = repair(&m, &o, &[web]);
    assert!(matches!(&steps[..], [Step::Kernel(Operation::UpdateRealServer(_, r))] if r.weight == 1), "{steps:?}");
}

#[test]
fn counters_are_fresh_only_from_a_read_made_for_planning() {
    let m = model();
    let (mut o, _) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    let server = o.virtual_server(&web).unwrap().server.clone();
    let counted =
        |o: &Observed| o.virtual_server(&web).unwrap().real_servers.values().map(|r| r.counted).collect::<Vec<_>>();
    let active =
        |o: &Observed| o.virtual_server(&web).unwrap().real_servers.values().next().unwrap().connections.active;
    assert!(!o.verify_real_servers(&server, &dests_of(&o.clone(), &web, 3), false));
    assert_eq!(counted(&o), vec![false, false]);
    assert_eq!(active(&o), 0, "a verification read's counts are not taken");
    assert!(!o.verify_real_servers(&server, &dests_of(&o.clone(), &web, 0), true));
    assert_eq!(counted(&o), vec![true, true]);
    // A verification read arriving after the count leaves it fresh.
    assert!(!o.verify_real_servers(&server, &dests_of(&o.clone(), &web, 3), false));
    assert_eq!((counted(&o), active(&o)), (vec![true, true], 0));
    o.mark_counters_stale_of(&[web]);
    assert_eq!(counted(&o), vec![false, false]);
}

#[test]
fn bound_addresses_are_verified_except_those_written_since() {
    let m = model();
    let (mut o, _) = programmed(&m);
    let (web, db, stray) = (ip("10.96.0.10"), ip("10.96.0.20"), ip("10.96.0.30"));
    let differ = o.verify_bound(&[web, stray], |_| false);
    assert_eq!(differ, vec![db, stray]);
    assert!(!o.is_bound(&db) && o.is_bound(&stray));
    let mut changes = Changes::new();
    changes.addresses.extend(differ);
    let steps = m.plan(&o, &Scope::Only(changes), &mut GracefulRemovals::new(), T0).steps;
    assert_eq!(steps, vec![Step::Bind(db), Step::Unbind(stray)]);

    let (mut o, _) = programmed(&m);
    assert!(o.verify_bound(&[web], |a| *a == db).is_empty());
    let bound: BTreeSet<_> = o.bound().copied().collect();
    assert_eq!(bound, [web, db].into());
}

#[test]
fn a_read_in_another_order_is_no_difference() {
    // The kernel lists real servers newest first; the verification compares them by id.
    let m = model();
    let (mut o, _) = programmed(&m);
    let web = tcp("10.96.0.10", 80);
    let server = o.virtual_server(&web).unwrap().server.clone();
    let mut dests = dests_of(&o, &web, 0);
    dests.reverse();
    assert!(!o.verify_real_servers(&server, &dests, false));
    let ids: Vec<RealServerId> = o.virtual_server(&web).unwrap().real_servers.keys().collect();
    assert_eq!(ids.len(), 2);
}

/// The per-family count (what the kernel's count of IPv4 virtual servers is compared with)
/// equals a count of every id, for each protocol, numbered protocols and firewall marks.
#[test]
fn virtual_servers_are_counted_by_family() {
    use ipvs::{Family, Protocol};
    let mut ids = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Other(33), Protocol::Other(u16::MAX)] {
        for addr in
            ["0.0.0.0", "10.96.0.1", "255.255.255.255", "::", "fd00::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
        {
            for port in [0, 80, u16::MAX] {
                ids.push(VirtualServerId::Tuple { protocol, addr: addr.parse().unwrap(), port });
            }
        }
    }
    for mark in [1, 7, u32::MAX] {
        ids.push(VirtualServerId::Fwmark { family: Family::V4, mark });
        ids.push(VirtualServerId::Fwmark { family: Family::V6, mark });
    }
    let mut observed = Observed::new();
    for (i, id) in ids.iter().enumerate() {
        let entry =
            VirtualServerEntry { server: kernel_entry(&VirtualServer::new(*id, "rr")), stats: Stats::default() };
        observed.replace_virtual_server(&entry, &[]);
        let seen = &ids[..=i];
        let ipv6 = seen.iter().filter(|id| id.family() == Family::V6).count();
        assert_eq!(observed.count_by_family(), (seen.len() - ipv6, ipv6), "after {id}");
    }
}
