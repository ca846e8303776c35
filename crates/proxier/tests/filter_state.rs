//! The desired state translated for nftables: masquerade per kind and policy, source ranges,
//! bound addresses, hairpin only for local endpoints, and a remote endpoint change that changes
//! no set element.

// The model's scenario builders: the translation is tested on the same objects.
#[path = "../../model/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;

use common::*;
use ipnet::IpNet;
use ipvs::Protocol;
use model::{Model, parse_prefix};
use netfilter::{Element, FilterState, MasqueradeRule, Target};
use proxier::{filter_state, filter_updates, sweep_updates};
use serde_json::json;

fn tcp(addr: &str, port: u16) -> Target {
    Target::new(ip(addr), Protocol::Tcp, port)
}

fn cidr(text: &str) -> IpNet {
    parse_prefix(text).unwrap()
}

fn model(cluster_cidrs: &[&str], masquerade_all: bool) -> Model {
    let mut c = config();
    c.cluster_cidrs = cluster_cidrs.iter().map(|t| cidr(t)).collect();
    c.masquerade_all = masquerade_all;
    new_model(c)
}

fn web_ports() -> serde_json::Value {
    json!([{"port": 8080, "protocol": "TCP"}])
}

#[test]
fn masquerade_follows_kind_policy_and_cluster_cidrs() {
    // (case, cluster CIDRs, masqueradeAll, Service spec, expected rule per target)
    type Case<'a> = (&'a str, &'a [&'a str], bool, serde_json::Value, Vec<(Target, MasqueradeRule)>);
    let cases: Vec<Case> = vec![
        (
            "ClusterIP with a cluster CIDR: outside only",
            &["10.244.0.0/16"],
            false,
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            vec![(tcp("10.96.0.10", 80), MasqueradeRule::OutsideClusterPrefixes)],
        ),
        (
            "ClusterIP, masqueradeAll",
            &["10.244.0.0/16"],
            true,
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            vec![(tcp("10.96.0.10", 80), MasqueradeRule::All)],
        ),
        (
            // Issue 7, item 3: the netfilter side then masquerades host-originated traffic (whose
            // source is the service address), as upstream does without a local detector.
            "IPv6 ClusterIP with only an IPv4 cluster CIDR: still the non-local rule",
            &["10.244.0.0/16"],
            false,
            json!({"clusterIP": "fd00:96::10", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            vec![(tcp("fd00:96::10", 80), MasqueradeRule::OutsideClusterPrefixes)],
        ),
        (
            "ClusterIP without any cluster CIDR: still the non-local rule",
            &[],
            false,
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            vec![(tcp("10.96.0.10", 80), MasqueradeRule::OutsideClusterPrefixes)],
        ),
        (
            "NodePort, policy Cluster: all of it",
            &["10.244.0.0/16"],
            false,
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
            vec![
                (tcp("10.96.0.10", 80), MasqueradeRule::OutsideClusterPrefixes),
                (tcp(NODE_V4, 30080), MasqueradeRule::All),
            ],
        ),
        (
            "NodePort, policy Local: sources kept",
            &["10.244.0.0/16"],
            false,
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
                   "ports": [{"port": 80, "nodePort": 30080}]}),
            vec![
                (tcp("10.96.0.10", 80), MasqueradeRule::OutsideClusterPrefixes),
                (tcp(NODE_V4, 30080), MasqueradeRule::None),
            ],
        ),
    ];
    for (name, cidrs, all, spec, expected) in cases {
        let mut m = model(cidrs, all);
        m.upsert_service(&service("web", spec));
        let state = filter_state(&m);
        assert_eq!(state.len(), expected.len(), "{name}");
        for (target, rule) in expected {
            let got = state.service(&target).map(|f| f.masquerade);
            assert_eq!(got, Some(rule), "{name}: {target}");
        }
    }
}

#[test]
fn load_balancer_ranges_binding_and_hairpin() {
    let mut m = model(&["10.244.0.0/16"], false);
    let svc = service_with(
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
               "loadBalancerSourceRanges": ["192.0.2.0/24"]}),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
    );
    m.upsert_service(&svc);
    m.upsert_endpoint_slice(&slice(
        "web-1",
        "web",
        "IPv4",
        web_ports(),
        json!([ep("10.244.1.2", NODE), ep("10.244.9.9", "node-b")]),
    ));
    let state = filter_state(&m);
    let lb = tcp("203.0.113.10", 80);
    let lb_filter = state.service(&lb).unwrap();
    assert_eq!(lb_filter.source_ranges, vec![cidr("192.0.2.0/24")]);
    assert!(lb_filter.bound);
    assert!(!state.service(&tcp(NODE_V4, 30080)).unwrap().bound, "NodePorts are not bound");
    let elements: BTreeSet<Element> = state.elements().copied().collect();
    let expected_present = [
        Element::Hairpin(tcp("10.244.1.2", 8080)),
        Element::SourceRestricted(lb),
        Element::SourceAllowed(lb, cidr("192.0.2.0/24")),
        Element::Bound(ip("10.96.0.10")),
        Element::Bound(ip("203.0.113.10")),
        Element::ServicePort(tcp("10.96.0.10", 80)),
    ];
    for e in expected_present {
        assert!(elements.contains(&e), "{e:?} in {elements:?}");
    }
    let expected_absent = [
        Element::Hairpin(tcp("10.244.9.9", 8080)),
        Element::SourceRestricted(tcp("10.96.0.10", 80)),
        Element::Bound(ip(NODE_V4)),
    ];
    for e in expected_absent {
        assert!(!elements.contains(&e), "{e:?} not in {elements:?}");
    }
}

#[test]
fn only_local_endpoint_changes_touch_the_sets() {
    let mut m = model(&["10.244.0.0/16"], false);
    m.upsert_service(&service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]})));
    m.upsert_endpoint_slice(&slice("web-1", "web", "IPv4", web_ports(), json!([ep("10.244.1.2", NODE)])));
    let mut applied = filter_state(&m);
    m.take_changes();
    // (step, endpoints after it, expected added, expected removed)
    let steps: Vec<(&str, serde_json::Value, Vec<Element>, Vec<Element>)> = vec![
        ("a remote endpoint comes", json!([ep("10.244.1.2", NODE), ep("10.244.9.9", "node-b")]), vec![], vec![]),
        ("a remote endpoint goes", json!([ep("10.244.1.2", NODE)]), vec![], vec![]),
        (
            "a local endpoint comes",
            json!([ep("10.244.1.2", NODE), ep("10.244.1.3", NODE)]),
            vec![Element::Hairpin(tcp("10.244.1.3", 8080))],
            vec![],
        ),
        (
            "the local endpoints go",
            json!([ep("10.244.9.9", "node-b")]),
            vec![],
            vec![Element::Hairpin(tcp("10.244.1.2", 8080)), Element::Hairpin(tcp("10.244.1.3", 8080))],
        ),
    ];
    for (name, endpoints, added, removed) in steps {
        m.upsert_endpoint_slice(&slice("web-1", "web", "IPv4", web_ports(), endpoints));
        let changes = m.take_changes();
        assert!(!changes.virtual_servers.is_empty(), "{name}: the IPVS side changed");
        let updates = filter_updates(&m, &changes.virtual_servers);
        let element_changes = applied.update(updates);
        assert_eq!(element_changes.added, added.into_iter().collect(), "{name}");
        assert_eq!(element_changes.removed, removed.into_iter().collect(), "{name}");
        assert_eq!(applied, filter_state(&m), "{name}: incremental equals full");
    }
    m.delete_service("default", "web");
    let changes = m.take_changes();
    applied.update(filter_updates(&m, &changes.virtual_servers));
    assert_eq!(applied, FilterState::new(), "a deleted Service leaves no element");
}

/// Issue 7, item 2: the model's short circuit reaches the netfilter side with the virtual
/// server's filter.
#[test]
fn a_local_policy_load_balancer_carries_its_short_circuit() {
    let mut m = model(&["10.244.0.0/16"], false);
    m.upsert_service(&service_with(
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
               "ports": [{"port": 80, "nodePort": 30080}]}),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
    ));
    let state = filter_state(&m);
    let lb = state.service(&tcp("203.0.113.10", 80)).unwrap();
    assert_eq!(lb.short_circuit, Some((ip("10.96.0.10"), 80)));
    assert_eq!(state.service(&tcp("10.96.0.10", 80)).unwrap().short_circuit, None);
}

/// A round's sweep: nothing when what was applied is what the model wants; else exactly the
/// filters that differ, the missing ones and the ones no longer wanted, so that applying them
/// gives the whole state the model wants.
#[test]
fn a_sweep_finds_only_what_differs_from_what_was_applied() {
    let mut m = model(&["10.244.0.0/16"], false);
    for (name, ip) in [("web", "10.96.0.10"), ("db", "10.96.0.20"), ("old", "10.96.0.30")] {
        m.upsert_service(&service(name, json!({"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080}]})));
        let slice_name = format!("{name}-1");
        m.upsert_endpoint_slice(&slice(&slice_name, name, "IPv4", web_ports(), json!([ep("10.244.9.9", "node-b")])));
    }
    let mut applied = filter_state(&m);
    assert_eq!(sweep_updates(&m, &applied), vec![], "in step: nothing");

    // Changes the applied state never heard of: a local endpoint (hairpin), a Service gone and
    // one new.
    let web = "web-1";
    m.upsert_endpoint_slice(&slice(web, "web", "IPv4", web_ports(), json!([ep("10.244.1.2", NODE)])));
    m.delete_service("default", "old");
    m.upsert_service(&service("new", json!({"clusterIP": "10.96.0.40", "ports": [{"port": 80}]})));
    let updates = sweep_updates(&m, &applied);
    let targets: BTreeSet<(Target, bool)> = updates.iter().map(|(t, f)| (*t, f.is_some())).collect();
    assert_eq!(
        targets,
        [(tcp("10.96.0.10", 80), true), (tcp("10.96.0.30", 80), false), (tcp("10.96.0.40", 80), true)].into(),
        "{updates:?}"
    );
    applied.update(updates);
    assert_eq!(applied, filter_state(&m));
    assert_eq!(sweep_updates(&m, &applied), vec![]);
}
