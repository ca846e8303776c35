//! Scenarios: which endpoints become real servers of which virtual server.

mod common;

use common::*;
use model::{Config, Masquerade};
use serde_json::{Value, json};

fn lb_local(etp: &str, itp: &str) -> k8s_openapi::api::core::v1::Service {
    service_with(
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalIPs": ["203.0.113.7"],
               "ports": [{"port": 80, "nodePort": 30080}], "healthCheckNodePort": 32000,
               "externalTrafficPolicy": etp, "internalTrafficPolicy": itp}),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}),
    )
}

const EXTERNAL: [(&str, u16); 3] = [("203.0.113.7", 80), ("198.51.100.1", 80), (NODE_V4, 30080)];

#[test]
fn external_traffic_policy_local_uses_local_endpoints_only_on_external_virtual_servers() {
    let s =
        slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.1.1", NODE), ep("10.0.2.1", "node-b")]));
    let m = model_of(&[lb_local("Local", "Cluster")], &[s]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.1:8080", "10.0.2.1:8080"]);
    for (addr, port) in EXTERNAL {
        let vs = m.desired().virtual_server(&tcp(addr, port)).unwrap();
        assert_eq!(rs_of(&m, &tcp(addr, port)).unwrap(), ["10.0.1.1:8080"], "{addr}:{port}");
        assert_eq!(vs.masquerade, Masquerade::None, "source IPs are kept with Local");
    }
    let info = m.service_info("default", "web").unwrap();
    assert_eq!(
        (info.health_check_node_port, info.local_endpoints, info.external_traffic_local),
        (Some(32000), 1, true)
    );
}

#[test]
fn external_traffic_policy_local_without_local_endpoint_gets_no_real_servers() {
    // Upstream IPVS falls back to all endpoints here; iptables/nftables drop, and so do we.
    let s = slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.2.1", "node-b")]));
    let m = model_of(&[lb_local("Local", "Cluster")], &[s]);
    for (addr, port) in EXTERNAL {
        assert_eq!(rs_of(&m, &tcp(addr, port)).unwrap(), Vec::<String>::new(), "{addr}:{port}");
    }
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.2.1:8080"]);
    assert_eq!(m.service_info("default", "web").unwrap().local_endpoints, 0);
}

#[test]
fn internal_traffic_policy_local_limits_the_cluster_ip_only() {
    let s =
        slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.1.1", NODE), ep("10.0.2.1", "node-b")]));
    let m = model_of(&[lb_local("Cluster", "Local")], &[s]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.1:8080"]);
    for (addr, port) in EXTERNAL {
        assert_eq!(rs_of(&m, &tcp(addr, port)).unwrap(), ["10.0.1.1:8080", "10.0.2.1:8080"]);
        assert_eq!(m.desired().virtual_server(&tcp(addr, port)).unwrap().masquerade, Masquerade::All);
    }
    assert_eq!(m.service_info("default", "web").unwrap().health_check_node_port, None);
}

fn hinted(addr: &str, node: &str, nodes: &[&str], zones: &[&str]) -> Value {
    let mut e = ep(addr, node);
    let mut hints = serde_json::Map::new();
    if !nodes.is_empty() {
        hints.insert("forNodes".into(), nodes.iter().map(|n| json!({"name": n})).collect());
    }
    if !zones.is_empty() {
        hints.insert("forZones".into(), zones.iter().map(|z| json!({"name": z})).collect());
    }
    e["hints"] = Value::Object(hints);
    e
}

#[test]
fn topology_hints_prefer_node_then_zone_only_when_all_ready_are_hinted_and_one_matches() {
    // (endpoints, expected real servers on this node in zone-a)
    let cases: Vec<(&str, Vec<Value>, Vec<&str>)> = vec![
        (
            "zone hints matching",
            vec![hinted("10.0.1.1", "n1", &[], &["zone-a"]), hinted("10.0.1.2", "n2", &[], &["zone-b"])],
            vec!["10.0.1.1:80"],
        ),
        (
            "node hints before zone hints",
            vec![hinted("10.0.1.1", "n1", &[NODE], &["zone-a"]), hinted("10.0.1.2", "n2", &["n2"], &["zone-a"])],
            vec!["10.0.1.1:80"],
        ),
        (
            "node hints not naming us: zone hints",
            vec![hinted("10.0.1.1", "n1", &["n1"], &["zone-a"]), hinted("10.0.1.2", "n2", &["n2"], &["zone-b"])],
            vec!["10.0.1.1:80"],
        ),
        (
            "one ready endpoint unhinted",
            vec![hinted("10.0.1.1", "n1", &[], &["zone-a"]), ep("10.0.1.2", "n2")],
            vec!["10.0.1.1:80", "10.0.1.2:80"],
        ),
        (
            "no hint matches",
            vec![hinted("10.0.1.1", "n1", &[], &["zone-b"]), hinted("10.0.1.2", "n2", &[], &["zone-c"])],
            vec!["10.0.1.1:80", "10.0.1.2:80"],
        ),
        (
            "unready unhinted endpoint does not matter",
            vec![
                hinted("10.0.1.1", "n1", &[], &["zone-a"]),
                hinted("10.0.1.2", "n2", &[], &["zone-b"]),
                ep_cond("10.0.1.3", "n3", false, false, false),
            ],
            vec!["10.0.1.1:80"],
        ),
    ];
    let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    for (what, eps, expected) in cases {
        let s = slice("web-1", "web", "IPv4", json!([{"port": 80}]), Value::Array(eps));
        let (m, w) = from_objects(config(), [&svc], [&s], Some(&node("zone-a", NODE_V4)));
        assert!(w.is_empty());
        assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), expected, "{what}");
    }
}

#[test]
fn zone_change_of_the_node_recomputes_hinted_services() {
    let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let s = slice(
        "web-1",
        "web",
        "IPv4",
        json!([{"port": 80}]),
        json!([hinted("10.0.1.1", "n1", &[], &["zone-a"]), hinted("10.0.1.2", "n2", &[], &["zone-b"])]),
    );
    let unhinted = service("plain", json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
    let (mut m, _) = from_objects(config(), [&svc, &unhinted], [&s], Some(&node("zone-a", NODE_V4)));
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.1:80"]);
    let before = m.stats().services_recomputed;
    m.set_node(&node("zone-b", NODE_V4));
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.2:80"]);
    assert_eq!(m.stats().services_recomputed - before, 1, "only the hinted Service is recomputed");
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_no_endpoint_is_ready() {
    // (endpoints, cluster real servers, local real servers); "L" = this node, "R" = remote
    let cases = [
        (
            "ready wins over terminating",
            json!([ep("10.0.0.1", "node-b"), ep_cond("10.0.0.2", NODE, false, true, true)]),
            vec!["10.0.0.1:80"],
            vec!["10.0.0.2:80"],
        ),
        (
            "no ready: serving+terminating",
            json!([ep_cond("10.0.0.1", "node-b", false, true, true), ep_cond("10.0.0.2", NODE, false, false, true)]),
            vec!["10.0.0.1:80"],
            vec![],
        ),
        ("not serving: nothing", json!([ep_cond("10.0.0.1", "node-b", false, false, true)]), vec![], vec![]),
        (
            "unset serving means serving",
            json!([{"addresses": ["10.0.0.1"], "nodeName": NODE, "conditions": {"ready": false, "terminating": true}}]),
            vec!["10.0.0.1:80"],
            vec!["10.0.0.1:80"],
        ),
        (
            "local set decided on its own",
            json!([
                ep("10.0.0.1", "node-b"),
                ep_cond("10.0.0.2", NODE, false, true, true),
                ep_cond("10.0.0.3", NODE, false, true, false)
            ]),
            vec!["10.0.0.1:80"],
            vec!["10.0.0.2:80"],
        ),
    ];
    for (what, eps, cluster, local) in cases {
        let itp = |p: &str| {
            service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}], "internalTrafficPolicy": p}))
        };
        let s = slice("web-1", "web", "IPv4", json!([{"port": 80}]), eps);
        let m = model_of(&[itp("Cluster")], std::slice::from_ref(&s));
        assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), cluster, "{what}: cluster");
        let m = model_of(&[itp("Local")], &[s]);
        assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), local, "{what}: local");
    }
}

#[test]
fn not_ready_endpoints_are_left_out_and_unset_ready_means_ready() {
    let eps = json!([
        ep_cond("10.0.0.1", NODE, false, false, false),
        {"addresses": ["10.0.0.2"]},
        ep("10.0.0.3", NODE),
        ep_cond("10.0.0.4", NODE, false, true, false),
    ]);
    let s = slice("web-1", "web", "IPv4", json!([{"port": 80}]), eps);
    let m = model_of(&[service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], &[s]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.0.2:80", "10.0.0.3:80"]);
}

#[test]
fn several_slices_per_service_are_merged_and_an_endpoint_in_two_counts_once() {
    let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}));
    let a = slice(
        "web-a",
        "web",
        "IPv4",
        json!([{"name": "http", "port": 8080}]),
        json!([ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b")]),
    );
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        json!([{"name": "http", "port": 8080}]),
        json!([ep("10.0.0.2", "node-b"), ep("10.0.0.3", NODE)]),
    );
    let other_port =
        slice("web-c", "web", "IPv4", json!([{"name": "metrics", "port": 9090}]), json!([ep("10.0.0.9", NODE)]));
    let mut m = model_of(&[svc], &[a, b, other_port]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
    assert_eq!(m.service_info("default", "web").unwrap().local_endpoints, 2);
    m.delete_endpoint_slice("default", "web-a");
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.0.2:8080", "10.0.0.3:8080"]);
}

#[test]
fn slices_arriving_before_their_service_are_used_when_it_comes() {
    let mut m = new_model(config());
    m.upsert_endpoint_slice(&slice("web-1", "web", "IPv4", json!([{"port": 80}]), json!([ep("10.0.0.1", NODE)])));
    assert!(m.desired().is_empty());
    m.upsert_service(&service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]})));
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.0.1:80"]);
    m.delete_service("default", "web");
    assert!(m.desired().is_empty() && m.desired().addresses().len() == 0);
}

#[test]
fn cluster_ip_masquerade_follows_settings() {
    // (masqueradeAll, cluster CIDRs, expected)
    let cases = [
        // No cluster CIDR: still "not from a local pod"; the netfilter side tells host-originated
        // traffic by its source (the service address), as upstream does (issue 7, item 3).
        (false, vec![], Masquerade::OutsideClusterCidrs),
        (false, vec!["10.0.0.0/16"], Masquerade::OutsideClusterCidrs),
        (true, vec!["10.0.0.0/16"], Masquerade::All),
    ];
    for (all, cidrs, expected) in cases {
        let mut c = Config::new(NODE);
        c.masquerade_all = all;
        c.cluster_cidrs = cidrs.iter().map(|s| s.parse().unwrap()).collect();
        let (m, _) =
            from_objects(c, [&service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], [], None);
        assert_eq!(m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().masquerade, expected);
    }
}

#[test]
fn malformed_slices_are_skipped_with_a_reason_and_others_unaffected() {
    // (addressType, ports, endpoints, a word the reason must contain)
    let cases = [("IPv5", json!([{"port": 80}]), json!([ep("10.0.0.1", NODE)]), "addressType")];
    let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let good = slice("web-good", "web", "IPv4", json!([{"port": 80}]), json!([ep("10.0.0.1", NODE)]));
    for (family, ports, eps, word) in cases {
        let mut m = model_of(std::slice::from_ref(&svc), std::slice::from_ref(&good));
        m.upsert_endpoint_slice(&slice("web-bad", "web", "IPv4", json!([{"port": 80}]), json!([ep("10.0.0.2", NODE)])));
        let w = m.upsert_endpoint_slice(&slice("web-bad", "web", family, ports.clone(), eps));
        assert_eq!(w.len(), 1, "{ports} {w:?}");
        assert_eq!(w[0].object, "EndpointSlice default/web-bad");
        assert!(w[0].reason.contains(word), "{}", w[0]);
        assert_eq!(
            rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(),
            ["10.0.0.1:80"],
            "the bad slice's old endpoints are gone"
        );
    }
    let fqdn = slice("web-fqdn", "web", "FQDN", json!([{"port": 80}]), json!([{"addresses": ["example.com"]}]));
    let mut m = new_model(config());
    assert!(m.upsert_endpoint_slice(&fqdn).is_empty(), "FQDN slices are ignored silently");
}

/// As upstream, an invalid port or endpoint of a slice is skipped with a warning naming the
/// slice, and the rest of the slice is used.
#[test]
fn only_the_invalid_part_of_a_slice_is_skipped() {
    // (ports, endpoints, a word the warning must contain)
    let cases = [
        (json!([{"port": 80}]), json!([ep("10.0.0.256", NODE), ep("10.0.0.2", NODE)]), "not an IP"),
        (json!([{"port": 80}]), json!([ep("fd00::1", NODE), ep("10.0.0.2", NODE)]), "IPv4"),
        (json!([{"port": 80}, {"name": "metrics", "port": 0}]), json!([ep("10.0.0.2", NODE)]), "invalid port 0"),
        (json!([{"port": 80}, {"name": "big", "port": 70000}]), json!([ep("10.0.0.2", NODE)]), "invalid port 70000"),
        (
            json!([{"port": 80}, {"name": "ping", "port": 7, "protocol": "ICMP"}]),
            json!([ep("10.0.0.2", NODE)]),
            "protocol",
        ),
    ];
    let svc = service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let good = slice("web-good", "web", "IPv4", json!([{"port": 80}]), json!([ep("10.0.0.1", NODE)]));
    for (ports, eps, word) in cases {
        let mut m = model_of(std::slice::from_ref(&svc), std::slice::from_ref(&good));
        let w = m.upsert_endpoint_slice(&slice("web-bad", "web", "IPv4", ports.clone(), eps.clone()));
        assert_eq!(w.len(), 1, "{ports} {eps} {w:?}");
        assert_eq!(w[0].object, "EndpointSlice default/web-bad");
        assert!(w[0].reason.contains(word) && w[0].reason.contains("skipped"), "{}", w[0]);
        assert!(!w[0].reason.contains("EndpointSlice skipped"), "only the part: {}", w[0]);
        assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.0.1:80", "10.0.0.2:80"], "{ports} {eps}");
    }
}

#[test]
fn health_check_counts_only_ready_local_endpoints_once_each() {
    // (endpoints, local endpoint count the health check reports)
    let cases = [
        ("one ready local", json!([ep("10.0.1.1", NODE), ep("10.0.2.1", "node-b")]), 1),
        ("not ready local", json!([ep_cond("10.0.1.1", NODE, false, false, false)]), 0),
        // Draining pods must make the load balancer look elsewhere, though they still serve.
        ("terminating local", json!([ep_cond("10.0.1.1", NODE, false, true, true)]), 0),
        ("remote only", json!([ep("10.0.2.1", "node-b"), ep("10.0.2.2", "node-b")]), 0),
        ("two ready local", json!([ep("10.0.1.1", NODE), ep("10.0.1.2", NODE)]), 2),
    ];
    for (what, eps, count) in cases {
        // Two ports: an endpoint serving both is still one endpoint.
        let ports = json!([{"name": "http", "port": 8080}, {"name": "https", "port": 8443}]);
        let s = slice("web-1", "web", "IPv4", ports, eps);
        let svc = service_with(
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
                   "healthCheckNodePort": 32000,
                   "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                             {"name": "https", "port": 443, "nodePort": 30443}]}),
            json!({}),
        );
        let m = model_of(&[svc], &[s]);
        let info = m.service_info("default", "web").unwrap();
        assert_eq!((info.health_check_node_port, info.local_endpoints), (Some(32000), count), "{what}");
    }
}
