//! Scenarios: the plan from an observed kernel state to the desired one.

mod common;

use std::time::Duration;

use common::*;
use ipvs::{
    ConnectionCounts, Family, Operation, Protocol, RealServer, RealServerEntry, RealServerId, ServiceFlags, Stats,
    Table, VirtualServer, VirtualServerEntry, VirtualServerId,
};
use model::{Changes, GracefulRemovals, Model, Observed, Plan, Scope, Step};
use serde_json::json;

const T0: Duration = Duration::from_secs(1000);

fn web(extra_spec: serde_json::Value) -> k8s_openapi::api::core::v1::Service {
    let mut spec = json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    service("web", spec)
}

fn web_slice(addrs: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    slice("web-1", "web", "IPv4", json!([{"port": 8080}]), addrs.iter().map(|a| ep(a, NODE)).collect())
}

fn full_plan(m: &Model, observed: &Observed, graceful: &mut GracefulRemovals, now: Duration) -> Plan {
    m.plan(observed, &Scope::All, graceful, now)
}

fn apply(observed: &mut Observed, plan: &Plan) {
    for step in &plan.steps {
        observed.apply(step);
    }
}

/// The kernel state after programming `m` from scratch.
fn programmed(m: &Model) -> Observed {
    let mut o = Observed::new();
    apply(&mut o, &full_plan(m, &Observed::new(), &mut GracefulRemovals::new(), T0));
    o
}

fn rs(addr: &str, port: u16) -> RealServerId {
    RealServerId { addr: ip(addr), port }
}

fn conns(active: u32, inactive: u32) -> ConnectionCounts {
    ConnectionCounts { active, inactive, persistent: 0 }
}

#[test]
fn fresh_plan_binds_before_virtual_servers_and_creates_them_before_their_real_servers() {
    let m = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1", "10.0.0.2"])]);
    let plan = full_plan(&m, &Observed::new(), &mut GracefulRemovals::new(), T0);
    let cip = tcp("10.96.0.10", 80);
    let np = tcp(NODE_V4, 30080);
    let pos = |s: &Step| plan.steps.iter().position(|x| x == s).unwrap();
    let bind = pos(&Step::Bind(ip("10.96.0.10")));
    let add_cip = pos(&Step::Kernel(Operation::AddVirtualServer(VirtualServer::new(cip, "rr"))));
    let add_np = pos(&Step::Kernel(Operation::AddVirtualServer(VirtualServer::new(np, "rr"))));
    assert_eq!(bind, 0);
    for vs in [cip, np] {
        for addr in ["10.0.0.1", "10.0.0.2"] {
            let add_rs = pos(&Step::Kernel(Operation::AddRealServer(vs, RealServer::new(ip(addr), 8080, 1))));
            assert!(add_rs > if vs == cip { add_cip } else { add_np });
        }
    }
    assert_eq!(plan.len(), 1 + 2 + 4);
}

#[test]
fn configuration_changes_update_in_place_and_never_delete() {
    // (service change, expected single operation kind)
    let cases = [(json!({"sessionAffinity": "ClientIP"}), "update virtual server"), (json!({}), "")];
    let base = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1"])]);
    let observed = programmed(&base);
    for (change, expected) in cases {
        let m = model_of(&[web(change.clone())], &[web_slice(&["10.0.0.1"])]);
        let plan = full_plan(&m, &observed, &mut GracefulRemovals::new(), T0);
        if expected.is_empty() {
            assert!(plan.is_empty(), "{change}: {plan:?}");
            continue;
        }
        assert_eq!(plan.len(), 2, "{change}: {plan:?}");
        for step in &plan.steps {
            assert!(step.to_string().starts_with(expected), "{change}: {step}");
        }
    }
    // A scheduler annotation change.
    let annotated = service_with(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
        json!({"metadata": {"annotations": {"ipvs.kube-ipvs-proxy.io/scheduler": "wlc"}}}),
    );
    let m = model_of(&[annotated], &[web_slice(&["10.0.0.1"])]);
    let plan = full_plan(&m, &observed, &mut GracefulRemovals::new(), T0);
    assert!(
        plan.steps.iter().all(|s| matches!(s, Step::Kernel(Operation::UpdateVirtualServer(v)) if v.scheduler == "wlc"))
    );
    assert_eq!(plan.len(), 2);
}

#[test]
fn real_server_weight_difference_is_updated_in_place() {
    let m = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1"])]);
    let mut observed = programmed(&m);
    let cip = tcp("10.96.0.10", 80);
    observed.apply(&Step::Kernel(Operation::UpdateRealServer(cip, RealServer::new(ip("10.0.0.1"), 8080, 5))));
    let plan = full_plan(&m, &observed, &mut GracefulRemovals::new(), T0);
    assert_eq!(plan.steps, [Step::Kernel(Operation::UpdateRealServer(cip, RealServer::new(ip("10.0.0.1"), 8080, 1)))]);
}

#[test]
fn removed_real_servers_go_gracefully_for_tcp_with_connections_and_at_once_otherwise() {
    // (protocol, connections, first plan's step)
    let cases = [
        (Protocol::Tcp, conns(3, 0), "update"),
        (Protocol::Tcp, conns(0, 2), "update"),
        (Protocol::Tcp, conns(0, 0), "delete"),
        (Protocol::Udp, conns(3, 4), "delete"),
        (Protocol::Sctp, conns(3, 0), "delete"),
    ];
    for (protocol, counts, first) in cases {
        let name = protocol.to_string();
        let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": name}]}));
        let with = |a: &[&str]| {
            slice(
                "web-1",
                "web",
                "IPv4",
                json!([{"port": 8080, "protocol": name}]),
                a.iter().map(|x| ep(x, NODE)).collect(),
            )
        };
        let mut m = model_of(&[svc], &[with(&["10.0.0.1", "10.0.0.2"])]);
        let mut observed = programmed(&m);
        let vs = tuple(protocol, "10.96.0.10", 80);
        observed.set_connections(&vs, &rs("10.0.0.2", 8080), counts);
        m.upsert_endpoint_slice(&with(&["10.0.0.1"]));
        let mut graceful = GracefulRemovals::new();
        let plan = m.plan(&observed, &Scope::Only(m.clone().take_changes()), &mut graceful, T0);
        assert_eq!(plan.len(), 1, "{protocol} {counts:?}: {plan:?}");
        let step = &plan.steps[0];
        assert!(step.to_string().starts_with(first), "{protocol} {counts:?}: {step}");
        if first == "update" {
            assert!(matches!(step, Step::Kernel(Operation::UpdateRealServer(_, r)) if r.weight == 0));
            assert!(graceful.contains(&vs, &rs("10.0.0.2", 8080)));
        } else {
            assert!(graceful.is_empty());
        }
    }
}

#[test]
fn graceful_removal_deletes_when_connections_end_or_time_is_up() {
    let grace = Duration::from_secs(60);
    // (seconds after the start, connections then, deleted?)
    let cases = [(10, conns(1, 0), false), (10, conns(0, 0), true), (59, conns(0, 1), false), (60, conns(5, 5), true)];
    for (after, counts, deleted) in cases {
        let mut c = config();
        c.graceful_termination = grace;
        let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let (mut m, _) = from_objects(c, [&svc], [&web_slice(&["10.0.0.1", "10.0.0.2"])], None);
        let vs = tcp("10.96.0.10", 80);
        let mut observed = programmed(&m);
        observed.set_connections(&vs, &rs("10.0.0.2", 8080), conns(4, 0));
        m.upsert_endpoint_slice(&web_slice(&["10.0.0.1"]));
        let changes = m.take_changes();
        let mut graceful = GracefulRemovals::new();
        let p = m.plan(&observed, &Scope::Only(changes), &mut graceful, T0);
        apply(&mut observed, &p);
        assert_eq!(
            observed.virtual_server(&vs).unwrap().real_servers.get(&rs("10.0.0.2", 8080)).unwrap().server.weight,
            0
        );
        observed.set_connections(&vs, &rs("10.0.0.2", 8080), counts);
        // Nothing changed since: the caller (the daemon's verification) puts the virtual server
        // with a pending removal in the scope.
        let later = m.plan(&observed, &Scope::Only(pending(&graceful)), &mut graceful, T0 + Duration::from_secs(after));
        let expected =
            if deleted { vec![Step::Kernel(Operation::DeleteRealServer(vs, rs("10.0.0.2", 8080)))] } else { vec![] };
        assert_eq!(later.steps, expected, "after {after}s with {counts:?}");
        assert_eq!(graceful.is_empty(), deleted);
    }
}

/// The virtual servers with removals pending, as changes (what the daemon plans at each
/// verification).
fn pending(graceful: &GracefulRemovals) -> Changes {
    let mut changes = Changes::new();
    changes.virtual_servers.extend(graceful.iter().map(|(vs, _, _)| *vs));
    changes
}

/// Service web without its NodePort.
fn cluster_ip_only() -> k8s_openapi::api::core::v1::Service {
    service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))
}

/// Issue 7, item 5: a TCP real server whose connection counters are not known fresh (added by
/// this proxy since the last dump, or counted by a dump that is now stale) is drained at weight 0
/// rather than deleted on a guess of "no connections"; only a fresh count of 0 (the next full
/// reconcile's dump) or the graceful time deletes it.
#[test]
fn a_real_server_without_fresh_counters_is_drained_not_deleted() {
    let vs = tcp("10.96.0.10", 80);
    let gone = rs("10.0.0.2", 8080);
    let mut m = model_of(&[cluster_ip_only()], &[web_slice(&["10.0.0.1"])]);
    let mut observed = programmed(&m);
    // Added incrementally: recorded from our own write, counters never read.
    m.take_changes();
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1", "10.0.0.2"]));
    let mut graceful = GracefulRemovals::new();
    let changes = m.take_changes();
    let p = m.plan(&observed, &Scope::Only(changes), &mut graceful, T0);
    apply(&mut observed, &p);
    assert!(observed.virtual_server(&vs).unwrap().real_servers.contains_key(&gone));
    // Removed before any dump: weight 0, not deleted.
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1"]));
    let changes = m.take_changes();
    let p = m.plan(&observed, &Scope::Only(changes), &mut graceful, T0);
    assert_eq!(p.steps, [Step::Kernel(Operation::UpdateRealServer(vs, RealServer::new(ip("10.0.0.2"), 8080, 0)))]);
    apply(&mut observed, &p);
    assert!(graceful.contains(&vs, &gone));
    // Later verifications know no more: still waiting.
    let later = T0 + Duration::from_secs(5);
    assert!(m.plan(&observed, &Scope::Only(pending(&graceful)), &mut graceful, later).is_empty());
    // A fresh dump counts 0 connections: deleted.
    observed.set_connections(&vs, &gone, conns(0, 0));
    let p = m.plan(&observed, &Scope::Only(pending(&graceful)), &mut graceful, later);
    assert_eq!(p.steps, [Step::Kernel(Operation::DeleteRealServer(vs, gone))]);
    // Counters read by a dump go stale after it: a count of 0 from then is no reason to delete.
    let mut m = model_of(&[cluster_ip_only()], &[web_slice(&["10.0.0.1", "10.0.0.2"])]);
    let mut observed = programmed(&m);
    observed.set_connections(&vs, &gone, conns(0, 0));
    observed.mark_counters_stale();
    m.take_changes();
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1"]));
    let changes = m.take_changes();
    let p = m.plan(&observed, &Scope::Only(changes), &mut GracefulRemovals::new(), T0);
    assert_eq!(p.steps, [Step::Kernel(Operation::UpdateRealServer(vs, RealServer::new(ip("10.0.0.2"), 8080, 0)))]);
}

#[test]
fn real_server_desired_again_while_draining_gets_its_weight_back() {
    let mut m = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1", "10.0.0.2"])]);
    let vs = tcp("10.96.0.10", 80);
    let mut observed = programmed(&m);
    observed.set_connections(&vs, &rs("10.0.0.2", 8080), conns(1, 0));
    let mut graceful = GracefulRemovals::new();
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1"]));
    let p = full_plan(&m, &observed, &mut graceful, T0);
    apply(&mut observed, &p);
    assert!(graceful.contains(&vs, &rs("10.0.0.2", 8080)));
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1", "10.0.0.2"]));
    let plan = full_plan(&m, &observed, &mut graceful, T0);
    assert!(
        plan.steps.contains(&Step::Kernel(Operation::UpdateRealServer(vs, RealServer::new(ip("10.0.0.2"), 8080, 1))))
    );
    assert!(graceful.is_empty());
}

#[test]
fn deleted_service_removes_virtual_servers_then_unbinds() {
    let mut m = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1"])]);
    let observed = programmed(&m);
    m.take_changes();
    m.delete_service("default", "web");
    let plan = m.plan(&observed, &Scope::Only(m.clone().take_changes()), &mut GracefulRemovals::new(), T0);
    assert_eq!(
        plan.steps,
        [
            Step::Kernel(Operation::DeleteVirtualServer(tcp("10.96.0.10", 80))),
            Step::Kernel(Operation::DeleteVirtualServer(tcp(NODE_V4, 30080))),
            Step::Unbind(ip("10.96.0.10")),
        ]
    );
}

fn entry(id: VirtualServerId, dests: &[(&str, u16, u32)]) -> (VirtualServerEntry, Vec<RealServerEntry>) {
    let mut server = VirtualServer::new(id, "rr");
    server.flags = ServiceFlags::HASHED; // as the kernel reports it
    (
        VirtualServerEntry { server, stats: Stats::default() },
        dests
            .iter()
            .map(|(a, p, w)| RealServerEntry {
                server: RealServer::new(ip(a), *p, *w),
                connections: ConnectionCounts::default(),
                stats: Stats::default(),
            })
            .collect(),
    )
}

/// Upstream's `excludeCIDRs` only keep entries from deletion: a Service whose ClusterIP lies in
/// an excluded prefix is programmed (bound, virtual server, real servers) and updated as usual;
/// once gone, its virtual server and address stay.
#[test]
fn excluded_prefixes_keep_entries_from_deletion_only() {
    let mut c = config();
    c.exclude_cidrs = vec!["10.96.0.0/24".parse().unwrap()];
    let (m, _) = from_objects(c.clone(), [&web(json!({}))], [&web_slice(&["10.0.0.1"])], None);
    let plan = full_plan(&m, &Observed::new(), &mut GracefulRemovals::new(), T0);
    let cip = tcp("10.96.0.10", 80);
    assert!(plan.steps.contains(&Step::Bind(ip("10.96.0.10"))), "{plan:?}");
    assert!(plan.steps.iter().any(|s| matches!(s, Step::Kernel(Operation::AddVirtualServer(v)) if v.id == cip)));
    assert!(plan.steps.iter().any(|s| matches!(s, Step::Kernel(Operation::AddRealServer(id, _)) if *id == cip)));
    let programmed = programmed(&m);
    // The Service goes: its ClusterIP's virtual server and address stay (its NodePort, on a
    // node address outside the prefix, goes as usual).
    let (gone, _) = from_objects(c, [], [], None);
    let plan = full_plan(&gone, &programmed, &mut GracefulRemovals::new(), T0);
    assert!(!plan.touched_virtual_servers().contains(&cip), "{plan:?}");
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Unbind(_))), "{plan:?}");
    assert!(plan.steps.contains(&Step::Kernel(Operation::DeleteVirtualServer(tcp(NODE_V4, 30080)))), "{plan:?}");
}

/// The kernel table holding what `observed` records, as a dump would return it.
fn table_of(observed: &Observed) -> Table {
    let mut table = Table::default();
    for (vs, dests) in observed.virtual_servers() {
        let d: Vec<(String, u16, u32)> = dests
            .real_servers
            .values()
            .map(|r| (r.server.id.addr.to_string(), r.server.id.port, r.server.weight))
            .collect();
        let d: Vec<(&str, u16, u32)> = d.iter().map(|(a, p, w)| (a.as_str(), *p, *w)).collect();
        table.services.push(entry(*vs, &d));
    }
    table
}

#[test]
fn only_owned_virtual_servers_are_ever_deleted() {
    let m = model_of(&[web(json!({}))], &[web_slice(&["10.0.0.1"])]);
    let mut c = config();
    c.exclude_cidrs = vec!["10.200.0.0/16".parse().unwrap()];
    let (m_excl, _) = from_objects(c, [&web(json!({}))], [&web_slice(&["10.0.0.1"])], None);
    // (virtual server in the kernel, bound on kube-ipvs0, recorded as this proxy's, deleted?)
    let cases = [
        (tcp("10.96.0.99", 80), true, false, true), // stale, on a bound address: ours
        (tcp(NODE_V4, 31000), false, true, true),   // stale NodePort this proxy made: ours
        // Issue 7, item 12: on a node address, whatever its port, an entry this proxy did not
        // make is someone else's, full sync after full sync.
        (tcp(NODE_V4, 31000), false, false, false),
        (tcp(NODE_V4, 8080), false, false, false),
        (tcp("172.16.0.5", 80), false, false, false), // someone else's
        (VirtualServerId::Fwmark { family: Family::V4, mark: 7 }, false, true, false),
        (tcp("10.200.0.5", 80), true, true, false), // excluded CIDR, even if bound or recorded
        // A protocol the proxy never programs (decoded as Other), on a node address: foreign.
        (VirtualServerId::Tuple { protocol: Protocol::Other(1), addr: ip(NODE_V4), port: 31000 }, false, true, false),
    ];
    for (id, bind, recorded, deleted) in cases {
        let mut table = table_of(&programmed(&m));
        table.services.push(entry(id, &[("10.1.1.1", 80, 1)]));
        let mut bound_addrs = vec![ip("10.96.0.10")];
        if bind {
            bound_addrs.extend(id.addr());
        }
        let mut observed = Observed::from_kernel(&table, bound_addrs);
        if recorded {
            observed.claim([id]);
        }
        let plan = full_plan(&m_excl, &observed, &mut GracefulRemovals::new(), T0);
        let touched = plan.touched_virtual_servers();
        assert_eq!(touched.contains(&id), deleted, "{id} recorded {recorded}: {plan:?}");
        if deleted {
            assert!(plan.steps.contains(&Step::Kernel(Operation::DeleteVirtualServer(id))));
        }
        assert_eq!(touched.len(), usize::from(deleted), "{id}: nothing else is touched: {plan:?}");
        let unbinds = plan.steps.iter().filter(|s| matches!(s, Step::Unbind(_))).count();
        assert_eq!(unbinds, usize::from(bind && deleted), "{id}: {plan:?}");
    }
}

#[test]
fn restart_with_unchanged_inputs_plans_nothing_but_restores_zero_weights() {
    let m = model_of(&[web(json!({"sessionAffinity": "ClientIP"}))], &[web_slice(&["10.0.0.1", "10.0.0.2"])]);
    let cip = tcp("10.96.0.10", 80);
    let np = tcp(NODE_V4, 30080);
    let kernel = |w2: u32| {
        let mut t = Table::default();
        for id in [cip, np] {
            let (mut vs, dests) = entry(id, &[("10.0.0.1", 8080, 1), ("10.0.0.2", 8080, w2)]);
            vs.server.flags = ServiceFlags::PERSISTENT | ServiceFlags::HASHED;
            vs.server.timeout = 10800;
            t.services.push((vs, dests));
        }
        Observed::from_kernel(&t, [ip("10.96.0.10")])
    };
    assert!(full_plan(&m, &kernel(1), &mut GracefulRemovals::new(), T0).is_empty());
    // Upstream issue 92019: a weight left at 0 by a graceful removal before the restart.
    let plan = full_plan(&m, &kernel(0), &mut GracefulRemovals::new(), T0);
    let restored = |id| Step::Kernel(Operation::UpdateRealServer(id, RealServer::new(ip("10.0.0.2"), 8080, 1)));
    assert_eq!(plan.steps, [restored(cip), restored(np)]);
}

#[test]
fn incremental_plan_touches_only_the_changed_service() {
    let other = service("other", json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}));
    let mut m = model_of(&[web(json!({})), other], &[web_slice(&["10.0.0.1"])]);
    let mut observed = programmed(&m);
    // The kernel also drifted on "other": a scoped plan must not look at it.
    observed.remove_virtual_server(&tcp("10.96.0.20", 80));
    m.take_changes();
    m.upsert_endpoint_slice(&web_slice(&["10.0.0.1", "10.0.0.3"]));
    let plan = m.plan(&observed, &Scope::Only(m.clone().take_changes()), &mut GracefulRemovals::new(), T0);
    assert_eq!(plan.touched_virtual_servers(), [tcp("10.96.0.10", 80), tcp(NODE_V4, 30080)].into_iter().collect());
    assert_eq!(plan.len(), 2);
    let full = full_plan(&m, &observed, &mut GracefulRemovals::new(), T0);
    assert!(full.touched_virtual_servers().contains(&tcp("10.96.0.20", 80)), "the full reconcile repairs drift");
}

/// A NodePort left on an address the node lost is deleted when the record of what this proxy
/// made says it is its own: while running (the record is the applied steps), and after a
/// restart when the record was kept (the daemon's file under /run); a fresh record knows
/// nothing, and then the entry is left as possibly someone else's.
#[test]
fn node_port_on_a_lost_node_address_is_deleted_only_when_recorded_as_ours() {
    let objects = (web(json!({})), web_slice(&["10.0.0.1"]));
    let mut running = model_of(std::slice::from_ref(&objects.0), std::slice::from_ref(&objects.1));
    let stale = tcp(NODE_V4, 30080);
    let delete_stale = Step::Kernel(Operation::DeleteVirtualServer(stale));
    // The node's address changes from .10 to .11.
    let now = vec![ip("192.168.0.11")];
    let (restarted, _) = from_objects_on(now.clone(), config(), [&objects.0], [&objects.1], None);
    running.set_node_addresses(now.clone());
    let applied = programmed(&model_of(std::slice::from_ref(&objects.0), std::slice::from_ref(&objects.1)));
    let mut dumped = Observed::from_kernel(&table_of(&applied), applied.bound().copied());
    let forgotten = dumped.clone();
    dumped.claim(applied.ours_unbound().copied());
    // (case, model, record, deleted?)
    let cases = [
        ("while running", &running, &applied, true),
        ("after a restart, record kept", &restarted, &dumped, true),
        ("after a restart, record lost", &restarted, &forgotten, false),
    ];
    for (what, m, observed, deleted) in cases {
        let plan = full_plan(m, observed, &mut GracefulRemovals::new(), T0);
        assert_eq!(plan.steps.contains(&delete_stale), deleted, "{what}: {plan:?}");
        assert!(plan.touched_virtual_servers().contains(&tcp("192.168.0.11", 30080)), "{what}: the new NodePort");
    }
}
