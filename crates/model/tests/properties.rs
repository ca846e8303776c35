//! Properties over random objects and kernel states (proptest).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ipvs::{
    ConnectionCounts, Family, Operation, Protocol, RealServer, RealServerEntry, RealServerId, ServiceFlags, Stats,
    Table, VirtualServer, VirtualServerEntry, VirtualServerId,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{Config, GracefulRemovals, Observed, Scope, Step};
use proptest::prelude::*;
use serde_json::{Value, json};

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// A random Service `default/s<i>`: families, types, ports, external addresses, policies.
fn arb_service() -> impl Strategy<Value = Service> {
    (
        0..5usize,
        0..3usize,
        0..4u8,
        pick(&["ClusterIP", "NodePort", "LoadBalancer"]),
        proptest::collection::vec((0..3usize, pick(&[80u16, 443, 53]), 30000..30004u16), 1..3),
        proptest::collection::vec(pick(&["203.0.113.1", "203.0.113.2", "2001:db8::1"]), 0..2),
        proptest::collection::vec((pick(&["198.51.100.1", "fd00:1::10", NODE_V4]), pick(&["", "VIP", "Proxy"])), 0..2),
        (any::<bool>(), any::<bool>(), any::<bool>(), pick(&["", "wlc", "bogus"])),
    )
        .prop_map(|(i, fam, cip, type_, ports, external, ingress, (etp, itp, affinity, sched))| {
            let (ips, fams): (Vec<String>, Vec<&str>) = match fam {
                0 => (vec![format!("10.96.0.{cip}")], vec!["IPv4"]),
                1 => (vec![format!("fd00:96::{cip}")], vec!["IPv6"]),
                _ => (vec![format!("10.96.0.{cip}"), format!("fd00:96::{cip}")], vec!["IPv4", "IPv6"]),
            };
            let ports: Vec<Value> = ports
                .iter()
                .enumerate()
                .map(|(j, (p, port, np))| json!({"name": format!("p{j}"), "protocol": PROTOCOLS[*p], "port": port, "nodePort": np}))
                .collect();
            let ingress: Vec<Value> = ingress
                .iter()
                .map(|(ip, mode)| if mode.is_empty() { json!({"ip": ip}) } else { json!({"ip": ip, "ipMode": mode}) })
                .collect();
            let mut meta = json!({"namespace": "default", "name": format!("s{i}")});
            if !sched.is_empty() {
                meta["annotations"] = json!({"ipvs.kube-ipvs-proxy.io/scheduler": sched});
            }
            serde_json::from_value(json!({
                "metadata": meta,
                "spec": {"type": type_, "clusterIP": ips[0], "clusterIPs": ips, "ipFamilies": fams, "ports": ports,
                         "externalIPs": external,
                         "externalTrafficPolicy": if etp { "Local" } else { "Cluster" },
                         "internalTrafficPolicy": if itp { "Local" } else { "Cluster" },
                         "sessionAffinity": if affinity { "ClientIP" } else { "None" }},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap()
        })
}

/// A random slice `default/e<i>` of a random Service.
fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    (
        0..6usize,
        0..5usize,
        any::<bool>(),
        proptest::collection::vec((0..3usize, 0..3usize), 0..3),
        proptest::collection::vec((0..5u8, any::<bool>(), 0..4u8, pick(&["", "zone-a", "zone-b"])), 0..4),
    )
        .prop_map(|(i, svc, v6, ports, eps)| {
            let ports: Vec<Value> = ports
                .iter()
                .map(|(j, p)| json!({"name": format!("p{j}"), "protocol": PROTOCOLS[*p], "port": 8080 + j}))
                .collect();
            let eps: Vec<Value> = eps
                .iter()
                .map(|(a, local, cond, zone)| {
                    let addr = if v6 { format!("fd00:10::{a}") } else { format!("10.0.0.{a}") };
                    let (ready, serving, terminating) =
                        [(true, true, false), (false, true, true), (false, false, true), (false, false, false)]
                            [*cond as usize];
                    let mut e = ep_cond(&addr, if *local { NODE } else { "node-b" }, ready, serving, terminating);
                    if !zone.is_empty() {
                        e["hints"] = json!({"forZones": [{"name": zone}]});
                    }
                    e
                })
                .collect();
            slice(
                &format!("e{i}"),
                &format!("s{svc}"),
                if v6 { "IPv6" } else { "IPv4" },
                Value::Array(ports),
                Value::Array(eps),
            )
        })
}

fn prop_config() -> Config {
    let mut c = config();
    c.cluster_cidrs = vec!["10.0.0.0/16".parse().unwrap()];
    c.exclude_cidrs = vec!["10.96.0.3/32".parse().unwrap()];
    c
}

/// A random kernel: virtual servers from the addresses the Services use plus foreign ones, with
/// random real servers, weights and connections, and a random set of bound addresses.
fn arb_kernel() -> impl Strategy<Value = Observed> {
    let addrs =
        &["10.96.0.0", "10.96.0.1", "10.96.0.3", "fd00:96::1", "203.0.113.1", NODE_V4, "172.16.0.1", "172.16.0.2"];
    (
        proptest::collection::vec(
            (
                pick(addrs),
                0..3usize,
                pick(&[80u16, 443, 30000]),
                pick(&["rr", "wlc"]),
                proptest::collection::vec((0..5u8, 8080..8082u16, 0..3u32, 0..3u32), 0..3),
            ),
            0..6,
        ),
        proptest::collection::vec(pick(addrs), 0..4),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(vss, bound, fwmark, claimed)| {
            let mut t = Table::default();
            let mut seen = BTreeSet::new();
            for (addr, p, port, sched, dests) in vss {
                let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][p];
                let id = VirtualServerId::Tuple { protocol, addr: ip(addr), port };
                if !seen.insert(id) {
                    continue;
                }
                let mut server = VirtualServer::new(id, sched);
                server.flags = ServiceFlags::HASHED;
                let rs: BTreeMap<_, _> = dests
                    .into_iter()
                    .map(|(a, port, w, c)| {
                        let a: IpAddr =
                            if addr.contains(':') { format!("fd00:10::{a}") } else { format!("10.0.0.{a}") }
                                .parse()
                                .unwrap();
                        (
                            (a, port),
                            RealServerEntry {
                                server: RealServer::new(a, port, w),
                                connections: ConnectionCounts { active: c, inactive: 0, persistent: 0 },
                                stats: Stats::default(),
                            },
                        )
                    })
                    .collect();
                t.services.push((VirtualServerEntry { server, stats: Stats::default() }, rs.into_values().collect()));
            }
            if fwmark {
                let id = VirtualServerId::Fwmark { family: Family::V4, mark: 7 };
                t.services.push((
                    VirtualServerEntry { server: VirtualServer::new(id, "rr"), stats: Stats::default() },
                    vec![],
                ));
            }
            // Some of them recorded as this proxy's (made before a restart).
            let mut observed = Observed::from_kernel(&t, bound.iter().map(|a| ip(a)));
            let ids: Vec<VirtualServerId> = t.services.iter().map(|(vs, _)| vs.server.id).collect();
            observed
                .claim(ids.into_iter().enumerate().filter(|(i, _)| claimed & (1 << (i % 8)) != 0).map(|(_, id)| id));
            observed
        })
}

fn same_config(a: &VirtualServer, b: &VirtualServer) -> bool {
    (a.scheduler.as_str(), a.flags.settable(), a.timeout, a.netmask)
        == (b.scheduler.as_str(), b.flags.settable(), b.timeout, b.netmask)
}

/// Whether `addr` lies in an excluded prefix.
fn is_excluded(config: &Config, addr: &IpAddr) -> bool {
    config.exclude_cidrs.iter().any(|c| c.contains(addr))
}

/// Records a fresh count of no connections on every real server of `kernel`.
fn count_every_real_server_idle(kernel: &mut Observed) {
    let all: Vec<(VirtualServerId, RealServerId)> =
        kernel.virtual_servers().flat_map(|(id, v)| v.real_servers.keys().map(move |r| (*id, r))).collect();
    for (vs, rs) in all {
        kernel.set_connections(&vs, &rs, ConnectionCounts::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Applying the plan to the observed state yields the desired state; foreign and excluded
    /// entries are untouched; only draining TCP real servers remain, at weight 0.
    #[test]
    fn applying_the_plan_yields_the_desired_state(
        services in proptest::collection::vec(arb_service(), 0..6),
        slices in proptest::collection::vec(arb_slice(), 0..6),
        before in arb_kernel(),
    ) {
        let (m, _) = from_objects(prop_config(), &services, &slices, None);
        let mut graceful = GracefulRemovals::new();
        let plan = m.plan(&before, &Scope::All, &mut graceful, Duration::from_secs(1));
        let mut after = before.clone();
        for step in &plan.steps {
            after.apply(step);
        }
        let desired = m.desired();
        // Desired virtual servers are programmed, excluded prefixes or not (upstream: excludeCIDRs
        // only keep entries from deletion).
        for (id, d) in desired.virtual_servers() {
            let o = after.virtual_server(id);
            prop_assert!(o.is_some(), "{} missing", id);
            let o = o.unwrap();
            prop_assert!(same_config(&d.server, &o.server), "{}: {:?} vs {:?}", id, d.server, o.server);
            for rs in d.real_server_configs() {
                prop_assert_eq!(o.real_servers.get(&rs.id).map(|r| r.server), Some(rs));
            }
            for r in &o.real_servers {
                let rs_id = &r.server.id;
                if !d.real_servers.contains_key(rs_id) {
                    prop_assert!(graceful.contains(id, rs_id) && r.server.weight == 0 && r.connections.total() > 0,
                        "{} {:?} left behind", id, rs_id);
                    let tcp = matches!(id, VirtualServerId::Tuple { protocol: Protocol::Tcp, .. });
                    prop_assert!(tcp, "{} is not TCP", id);
                }
            }
        }
        for (id, o) in before.virtual_servers() {
            if desired.virtual_server(id).is_some() {
                continue;
            }
            // The rule, restated here rather than asked of the plan's own policy: ours
            // are tuple virtual servers outside the excluded prefixes on an address bound (or to
            // be bound) on kube-ipvs0, or recorded as made by this proxy (on node addresses
            // nothing else tells).
            let owned = id.addr().is_some_and(|a| {
                !is_excluded(m.config(), &a)
                    && (before.is_bound(&a) || desired.wants_address(&a) || before.is_ours(id))
            });
            prop_assert_eq!(after.virtual_server(id).is_some(), !owned, "{}", id);
            if !owned {
                prop_assert_eq!(after.virtual_server(id), Some(o), "foreign {} touched", id);
            }
        }
        for addr in desired.addresses() {
            prop_assert!(after.is_bound(addr));
        }
        for addr in after.bound() {
            prop_assert!(desired.wants_address(addr) || is_excluded(m.config(), addr), "{} still bound", addr);
        }
        // Once converged, nothing more to do (draining real servers wait for their counters).
        let again = m.plan(&after, &Scope::All, &mut graceful, Duration::from_secs(2));
        prop_assert!(again.is_empty(), "{:?}", again);
    }

    /// The plan from a state to itself is empty, and a fresh kernel is programmed by one plan.
    #[test]
    fn plan_from_a_state_to_itself_is_empty(
        services in proptest::collection::vec(arb_service(), 0..6),
        slices in proptest::collection::vec(arb_slice(), 0..6),
    ) {
        let (m, _) = from_objects(prop_config(), &services, &slices, None);
        let mut observed = Observed::new();
        let mut graceful = GracefulRemovals::new();
        let plan = m.plan(&observed, &Scope::All, &mut graceful, Duration::ZERO);
        for step in &plan.steps {
            observed.apply(step);
        }
        prop_assert!(m.plan(&observed, &Scope::All, &mut graceful, Duration::ZERO).is_empty());
        prop_assert!(graceful.is_empty());
    }

    /// After any sequence of incremental updates the model equals one built from scratch from the
    /// final objects, and scoped plans applied after each update keep the kernel equal to it.
    #[test]
    fn incremental_updates_equal_a_build_from_scratch(
        ops in proptest::collection::vec(
            prop_oneof![
                3 => arb_service().prop_map(|s| Op::UpsertService(Box::new(s))),
                1 => (0..5usize).prop_map(Op::DeleteService),
                4 => arb_slice().prop_map(|s| Op::UpsertSlice(Box::new(s))),
                1 => (0..6usize).prop_map(Op::DeleteSlice),
                1 => proptest::sample::subsequence(vec![NODE_V4, "192.168.0.11", NODE_V6], 0..3).prop_map(Op::NodeAddresses),
                1 => pick(&["zone-a", "zone-b"]).prop_map(Op::Zone),
                1 => Just(Op::OtherNode),
            ],
            0..25,
        ),
    ) {
        let mut m = new_model(prop_config());
        let mut kernel = Observed::new();
        let mut graceful = GracefulRemovals::new();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut node_addresses = common::node_addresses();
        let mut zone = None;
        for op in ops {
            match op {
                Op::UpsertService(s) => {
                    m.upsert_service(&s);
                    services.insert(s.metadata.name.clone().unwrap(), *s);
                }
                Op::DeleteService(i) => {
                    m.delete_service("default", &format!("s{i}"));
                    services.remove(&format!("s{i}"));
                }
                Op::UpsertSlice(s) => {
                    m.upsert_endpoint_slice(&s);
                    slices.insert(s.metadata.name.clone().unwrap(), *s);
                }
                Op::DeleteSlice(i) => {
                    m.delete_endpoint_slice("default", &format!("e{i}"));
                    slices.remove(&format!("e{i}"));
                }
                Op::Zone(z) => {
                    m.set_node(&node(z, NODE_V4));
                    zone = Some(node(z, NODE_V4));
                }
                Op::OtherNode => {
                    // Another node's object (its zone, and one of our addresses as its
                    // InternalIP): ignored, so the final build from scratch never sees it.
                    prop_assert_eq!(m.set_node(&node_named("node-b", "zone-b", NODE_V4)).len(), 1);
                }
                Op::NodeAddresses(a) => {
                    node_addresses = a.iter().map(|x| ip(x)).collect();
                    m.set_node_addresses(node_addresses.clone());
                }
            }
            // This kernel carries no traffic, and each plan sees it counted afresh (as after a
            // dump): removed real servers have a known 0 and go at once.
            count_every_real_server_idle(&mut kernel);
            let changes = m.take_changes();
            let plan = m.plan(&kernel, &Scope::Only(changes), &mut graceful, Duration::ZERO);
            for step in &plan.steps {
                kernel.apply(step);
            }
        }
        kernel.mark_counters_stale();
        let (scratch, _) =
            from_objects_on(node_addresses, prop_config(), services.values(), slices.values(), zone.as_ref());
        prop_assert_eq!(m.desired(), scratch.desired());
        prop_assert_eq!(m.service_infos().collect::<Vec<_>>(), scratch.service_infos().collect::<Vec<_>>());
        let mut fresh = Observed::new();
        for step in &scratch.plan(&Observed::new(), &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO).steps {
            fresh.apply(step);
        }
        // Entries in excluded prefixes are never deleted: an excluded Service that came and went
        // leaves its virtual server and address behind, by design. Compare without those.
        let mut kept = kernel.clone();
        let leftovers: Vec<Step> = kernel
            .virtual_servers()
            .filter(|(id, _)| scratch.desired().virtual_server(id).is_none())
            .filter(|(id, _)| id.addr().is_some_and(|a| is_excluded(scratch.config(), &a)))
            .map(|(id, _)| Step::Kernel(Operation::DeleteVirtualServer(*id)))
            .chain(
                kernel
                    .bound()
                    .filter(|a| !scratch.desired().wants_address(a) && is_excluded(scratch.config(), a))
                    .map(|a| Step::Unbind(*a)),
            )
            .collect();
        for step in &leftovers {
            kept.apply(step);
        }
        prop_assert_eq!(&kept, &fresh, "incremental plans diverged from a full programming");
    }
}

#[derive(Debug, Clone)]
enum Op {
    UpsertService(Box<Service>),
    DeleteService(usize),
    UpsertSlice(Box<EndpointSlice>),
    DeleteSlice(usize),
    NodeAddresses(Vec<&'static str>),
    Zone(&'static str),
    OtherNode,
}

/// Text that is sometimes valid, often not.
fn arb_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        pick(&[
            "10.96.0.1",
            "fd00::1",
            "None",
            "",
            "TCP",
            "UDP",
            "SCTP",
            "IPv4",
            "IPv6",
            "FQDN",
            "Local",
            "ClientIP",
            "NodePort",
            "LoadBalancer",
            "ExternalName",
            "10.0.0.0/8",
            "primary",
            "::",
            "0.0.0.0"
        ])
        .prop_map(|s| json!(s)),
        "[ -~]{0,12}".prop_map(|s| json!(s)),
    ]
}

fn arb_int() -> impl Strategy<Value = Value> {
    prop_oneof![Just(json!(null)), any::<i32>().prop_map(|n| json!(n)), (0..70000i32).prop_map(|n| json!(n))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Garbage in any field never panics; a Service either yields virtual servers or a warning
    /// or is one the proxy does not handle, and a valid Service beside it is unaffected.
    #[test]
    fn malformed_objects_never_panic_nor_affect_others(
        texts in proptest::collection::vec(arb_text(), 12),
        ints in proptest::collection::vec(arb_int(), 6),
    ) {
        let svc = json!({
            "metadata": {"namespace": "default", "name": "bad"},
            "spec": {"type": texts[0], "clusterIP": texts[1], "clusterIPs": [texts[1], texts[2]], "ipFamilies": [texts[3]],
                     "externalIPs": [texts[4]], "externalTrafficPolicy": texts[5], "sessionAffinity": texts[6],
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": ints[0]}},
                     "loadBalancerSourceRanges": [texts[7]], "healthCheckNodePort": ints[1],
                     "ports": [{"port": ints[2], "nodePort": ints[3], "protocol": texts[8]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": texts[9], "ipMode": texts[10]}]}},
        });
        let eps = json!([{"addresses": [texts[11]], "conditions": {"ready": true}},
                         {"addresses": [texts[1]], "nodeName": NODE}]);
        let sl = json!({
            "metadata": {"namespace": "default", "name": "bad-1", "labels": {"kubernetes.io/service-name": "bad"}},
            "addressType": texts[3], "endpoints": eps,
            "ports": [{"port": ints[4], "protocol": texts[8]}, {"name": texts[2], "port": ints[5]}],
        });
        let good = service("good", json!({"clusterIP": "10.96.0.200", "ports": [{"port": 80}]}));
        let mut m = new_model(prop_config());
        m.upsert_service(&good);
        // Objects that do not even deserialize are the sources' business; the rest must not panic.
        let mut handled_or_warned = true;
        if let Ok(svc) = serde_json::from_value::<Service>(svc) {
            let w = m.upsert_service(&svc);
            handled_or_warned = !w.is_empty() || m.service_info("default", "bad").is_some() || {
                let s = svc.spec.as_ref().unwrap();
                s.type_.as_deref() == Some("ExternalName") || s.cluster_ip.as_deref() == Some("None")
                    || s.cluster_ips.iter().flatten().any(|c| c == "None")
            };
        }
        if let Ok(sl) = serde_json::from_value::<EndpointSlice>(sl) {
            m.upsert_endpoint_slice(&sl);
        }
        let nd = json!({"metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": texts[6]}},
                        "status": {"addresses": [{"type": "InternalIP", "address": texts[4]}]}});
        if let Ok(nd) = serde_json::from_value::<k8s_openapi::api::core::v1::Node>(nd) {
            m.set_node(&nd);
        }
        prop_assert!(handled_or_warned);
        prop_assert_eq!(rs_of(&m, &tcp("10.96.0.200", 80)), Some(vec![]));
        prop_assert_eq!(m.service_info("default", "good").map(|i| i.virtual_servers.clone()), Some(vec![tcp("10.96.0.200", 80)]));
        let mut observed = Observed::new();
        for step in &m.plan(&Observed::new(), &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO).steps {
            observed.apply(step);
        }
        prop_assert!(m.plan(&observed, &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO).is_empty());
    }
}
