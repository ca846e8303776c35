//! Scenarios: which Services become which virtual servers, and which addresses are bound.

mod common;

use common::*;
use ipvs::{Protocol, ServiceFlags};
use model::{Config, Model, NodePortAddress, VirtualServerKind};
use serde_json::json;

fn web_slice() -> k8s_openapi::api::discovery::v1::EndpointSlice {
    slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.1.1", NODE), ep("10.0.2.1", "node-b")]))
}

/// NodePort Service `web`: port 80, nodePort 30080.
fn node_port_web() -> k8s_openapi::api::core::v1::Service {
    service("web", json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}))
}

/// The addresses the model's NodePort virtual servers listen on, in the desired state's order.
fn node_port_addresses(m: &Model) -> Vec<String> {
    m.desired()
        .virtual_servers()
        .filter(|(_, v)| v.kind == VirtualServerKind::NodePort)
        .map(|(id, _)| id.addr().unwrap().to_string())
        .collect()
}

#[test]
fn cluster_ip_gets_one_virtual_server_bound_with_all_ready_endpoints() {
    let m = model_of(&[service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], &[web_slice()]);
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80"]);
    assert_eq!(bound(&m), ["10.96.0.10"]);
    let vs = m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap();
    assert_eq!(vs.server.scheduler, "rr");
    assert_eq!(vs.kind, VirtualServerKind::ClusterIp);
    assert_eq!(vs.origin.to_string(), "default/web");
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.1:8080", "10.0.2.1:8080"]);
    assert!(vs.real_server_configs().all(|r| r.weight == 1 && r.forward == ipvs::ForwardMethod::Masquerade));
}

#[test]
fn node_port_listens_on_each_node_address_of_its_family_unbound() {
    let svc = node_port_web();
    let m = model_of(&[svc], &[web_slice()]);
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 192.168.0.10:30080"]);
    assert_eq!(bound(&m), ["10.96.0.10"], "NodePort addresses are not bound on kube-ipvs0");
    assert_eq!(rs_of(&m, &tcp(NODE_V4, 30080)).unwrap(), ["10.0.1.1:8080", "10.0.2.1:8080"]);
}

#[test]
fn node_port_addresses_filter_node_addresses() {
    let svc = node_port_web();
    // (nodePortAddresses, node addresses that get a NodePort)
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &["192.168.0.10", "192.168.1.10"]),
        (&["192.168.1.0/24"], &["192.168.1.10"]),
        (&["10.0.0.0/8"], &[]),
        (&["primary"], &["192.168.0.10"]),
    ];
    for (filters, expected) in cases {
        let mut c = config();
        c.node_port_addresses = filters.iter().map(|f| f.parse::<NodePortAddress>().unwrap()).collect();
        let addrs = vec![ip("192.168.0.10"), ip("192.168.1.10")];
        let (m, w) = from_objects_on(addrs, c, [&svc], [], Some(&node("zone-a", "192.168.0.10")));
        assert!(w.is_empty());
        let got = node_port_addresses(&m);
        assert_eq!(got, expected, "nodePortAddresses {filters:?}");
    }
}

/// Upstream filters `nodePortAddresses` per family: a family with no prefix listed keeps all of
/// its node addresses (`primary` names an address of each family).
#[test]
fn node_port_addresses_of_one_family_leave_the_other_unfiltered() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "ipFamilies": ["IPv4", "IPv6"], "type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let addrs = ["192.168.0.10", "192.168.1.10", "fd00:1::10", "fd00:2::10"].map(ip).to_vec();
    // (nodePortAddresses, node addresses that get a NodePort)
    let cases: [(&[&str], &[&str]); 4] = [
        (&["192.168.1.0/24"], &["192.168.1.10", "fd00:1::10", "fd00:2::10"]),
        (&["fd00:2::/64"], &["192.168.0.10", "192.168.1.10", "fd00:2::10"]),
        (&["192.168.1.0/24", "fd00:2::/64"], &["192.168.1.10", "fd00:2::10"]),
        (&["10.0.0.0/8"], &["fd00:1::10", "fd00:2::10"]),
    ];
    for (filters, expected) in cases {
        let mut c = config();
        c.node_port_addresses = filters.iter().map(|f| f.parse::<NodePortAddress>().unwrap()).collect();
        let (m, w) = from_objects_on(addrs.clone(), c, [&svc], [], None);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(node_port_addresses(&m), expected, "nodePortAddresses {filters:?}");
    }
}

#[test]
fn node_address_change_recomputes_node_ports() {
    let svc = node_port_web();
    let mut m = model_of(&[svc], &[]);
    m.take_changes();
    m.set_node_addresses(vec![ip("192.168.0.11")]);
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 192.168.0.11:30080"]);
    let changes = m.take_changes();
    assert_eq!(changes.virtual_servers, [tcp(NODE_V4, 30080), tcp("192.168.0.11", 30080)].into_iter().collect());
}

#[test]
fn load_balancer_ingress_ips_skip_ip_mode_proxy_and_node_addresses_are_not_bound() {
    let svc = service_with(
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}],
               "loadBalancerSourceRanges": ["203.0.113.0/24"]}),
        json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.1"},
            {"ip": "198.51.100.2", "ipMode": "VIP"},
            {"ip": "198.51.100.3", "ipMode": "Proxy"},
            {"hostname": "lb.example.com"},
            {"ip": NODE_V4},
        ]}}}),
    );
    let m = model_of(&[svc], &[]);
    assert_eq!(
        vs_names(&m),
        [
            "TCP 10.96.0.10:80",
            "TCP 192.168.0.10:80",
            "TCP 192.168.0.10:30080",
            "TCP 198.51.100.1:80",
            "TCP 198.51.100.2:80"
        ]
    );
    assert_eq!(bound(&m), ["10.96.0.10", "198.51.100.1", "198.51.100.2"]);
    let lb = m.desired().virtual_server(&tcp("198.51.100.1", 80)).unwrap();
    assert_eq!(lb.kind, VirtualServerKind::LoadBalancer);
    assert_eq!(lb.source_ranges, ["203.0.113.0/24".parse().unwrap()]);
    assert!(m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().source_ranges.is_empty());
}

/// Issue 7, item 2: the external addresses of an `externalTrafficPolicy: Local` Service carry
/// the ClusterIP and port their in-cluster traffic is sent to (all endpoints); its ClusterIP and
/// a Cluster-policy Service's addresses carry none.
#[test]
fn local_policy_external_addresses_short_circuit_to_the_cluster_ip() {
    let lb = |policy: &str| {
        service_with(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalTrafficPolicy": policy,
                "externalIPs": ["198.51.100.1"], "ports": [{"port": 80, "nodePort": 30080}]}),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
        )
    };
    let target = Some((ip("10.96.0.10"), 80));
    // (policy, virtual server, short circuit)
    let cases = [
        ("Local", tcp("203.0.113.7", 80), target),
        ("Local", tcp("198.51.100.1", 80), target),
        ("Local", tcp(NODE_V4, 30080), target),
        ("Local", tcp("10.96.0.10", 80), None),
        ("Cluster", tcp("203.0.113.7", 80), None),
        ("Cluster", tcp(NODE_V4, 30080), None),
    ];
    for (policy, id, want) in cases {
        let m = model_of(&[lb(policy)], &[]);
        assert_eq!(m.desired().virtual_server(&id).unwrap().short_circuit, want, "{policy} {id}");
    }
}

/// Upstream never binds a node address: bound on kube-ipvs0, the bound-address reject rule
/// would refuse every other port of it (sshd, the kubelet, NodePorts). An externalIP equal to a
/// node address gets its virtual server, unbound; when the node loses the address it is bound.
#[test]
fn external_ips_that_are_node_addresses_are_not_bound() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}], "externalIPs": [NODE_V4, "203.0.113.7"]}),
    );
    let mut m = model_of(&[svc], &[]);
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 192.168.0.10:80", "TCP 203.0.113.7:80"]);
    assert_eq!(bound(&m), ["10.96.0.10", "203.0.113.7"]);
    assert!(!m.desired().virtual_server(&tcp(NODE_V4, 80)).unwrap().bind);
    m.take_changes();
    m.set_node_addresses(vec![ip("192.168.0.11")]);
    assert_eq!(bound(&m), ["10.96.0.10", "192.168.0.10", "203.0.113.7"]);
    assert!(m.take_changes().addresses.contains(&ip(NODE_V4)), "the address change is planned");
}

#[test]
fn external_ips_are_virtual_servers_bound_and_other_family_ones_warned() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}],
        "externalIPs": ["203.0.113.7", "2001:db8::7"]}),
    );
    let (m, w) = from_objects(config(), [&svc], [], None);
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 203.0.113.7:80"]);
    assert_eq!(bound(&m), ["10.96.0.10", "203.0.113.7"]);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].object, "Service default/web");
    assert!(w[0].reason.contains("2001:db8::7"), "{}", w[0]);
}

#[test]
fn session_affinity_client_ip_makes_persistent_virtual_servers() {
    // (clusterIP, sessionAffinityConfig, expected timeout, expected netmask: /32 or /128)
    let cases = [
        ("10.96.0.10", json!(null), 10800, 0xffff_ffff),
        ("10.96.0.10", json!({"clientIP": {"timeoutSeconds": 60}}), 60, 0xffff_ffff),
        ("fd00:96::10", json!({"clientIP": {"timeoutSeconds": 60}}), 60, 128),
    ];
    for (cluster_ip, cfg, timeout, netmask) in cases {
        let svc = service(
            "web",
            json!({"clusterIP": cluster_ip, "ports": [{"port": 80}],
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": cfg}),
        );
        let m = model_of(&[svc], &[]);
        let vs = &m.desired().virtual_server(&tcp(cluster_ip, 80)).unwrap().server;
        assert!(vs.flags.contains(ServiceFlags::PERSISTENT), "{cluster_ip}");
        assert_eq!((vs.timeout, vs.netmask), (timeout, netmask), "{cluster_ip}");
    }
    let plain = model_of(&[service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], &[]);
    assert_eq!(plain.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().server.flags, ServiceFlags::empty());
}

#[test]
fn dual_stack_handles_each_family_alone() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "ipFamilies": ["IPv4", "IPv6"], "type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let v4 = slice("web-v4", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.1.1", NODE)]));
    let v6 = slice("web-v6", "web", "IPv6", json!([{"port": 8080}]), json!([ep("fd00:10::1", NODE)]));
    let m = model_of(&[svc], &[v4, v6]);
    assert_eq!(
        vs_names(&m),
        ["TCP 10.96.0.10:80", "TCP 192.168.0.10:30080", "TCP [fd00:1::10]:30080", "TCP [fd00:96::10]:80"]
    );
    assert_eq!(bound(&m), ["10.96.0.10", "fd00:96::10"]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), ["10.0.1.1:8080"]);
    assert_eq!(rs_of(&m, &tcp("fd00:96::10", 80)).unwrap(), ["[fd00:10::1]:8080"]);
    assert_eq!(rs_of(&m, &tcp(NODE_V6, 30080)).unwrap(), ["[fd00:10::1]:8080"]);
    assert_eq!(m.desired().virtual_server(&tcp("fd00:96::10", 80)).unwrap().server.netmask, 128);
}

#[test]
fn services_not_for_this_proxy_are_skipped_silently() {
    let cases = [
        ("headless", service("s", json!({"clusterIP": "None", "ports": [{"port": 80}]}))),
        ("ExternalName", service("s", json!({"type": "ExternalName", "externalName": "example.com"}))),
        (
            "service-proxy-name",
            service_with(
                "s",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
                json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
            ),
        ),
    ];
    for (what, svc) in cases {
        let (m, w) = from_objects(config(), [&svc], [], None);
        assert!(m.desired().is_empty() && m.service_infos().len() == 0, "{what} must be skipped");
        assert!(w.is_empty(), "{what}: {w:?}");
    }
}

#[test]
fn service_without_endpoints_still_gets_its_virtual_servers() {
    let m = model_of(&[service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], &[]);
    assert_eq!(rs_of(&m, &tcp("10.96.0.10", 80)).unwrap(), Vec::<String>::new());
    assert_eq!(bound(&m), ["10.96.0.10"]);
}

#[test]
fn tcp_udp_and_sctp_ports_each_get_their_endpoint_ports() {
    let svc = service(
        "dns",
        json!({"clusterIP": "10.96.0.10", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "sig", "port": 3868, "protocol": "SCTP"}]}),
    );
    let s = slice(
        "dns-1",
        "dns",
        "IPv4",
        json!([
        {"name": "dns", "port": 1053, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 1054, "protocol": "TCP"},
        {"name": "sig", "port": 3869, "protocol": "SCTP"}]),
        json!([ep("10.0.1.1", NODE)]),
    );
    let m = model_of(&[svc], &[s]);
    for (protocol, port, rs) in [
        (Protocol::Udp, 53, "10.0.1.1:1053"),
        (Protocol::Tcp, 53, "10.0.1.1:1054"),
        (Protocol::Sctp, 3868, "10.0.1.1:3869"),
    ] {
        assert_eq!(rs_of(&m, &tuple(protocol, "10.96.0.10", port)).unwrap(), [rs], "{protocol}");
    }
    assert_eq!(m.desired().len(), 3);
}

#[test]
fn scheduler_annotation_picks_a_known_scheduler_and_ignores_unknown_ones() {
    // (annotation, scheduler used, warned)
    let cases =
        [(None, "rr", false), (Some("mh"), "mh", false), (Some("wlc"), "wlc", false), (Some("fastest"), "rr", true)];
    for (annotation, expected, warned) in cases {
        let extra = match annotation {
            Some(a) => json!({"metadata": {"annotations": {"ipvs.kube-ipvs-proxy.io/scheduler": a}}}),
            None => json!({}),
        };
        let svc = service_with("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}), extra);
        let (m, w) = from_objects(config(), [&svc], [], None);
        assert_eq!(m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().server.scheduler, expected);
        assert_eq!(!w.is_empty(), warned, "{annotation:?}: {w:?}");
    }
}

#[test]
fn default_scheduler_comes_from_the_settings() {
    let mut c = config();
    c.default_scheduler = "lc".into();
    let (m, _) =
        from_objects(c, [&service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))], [], None);
    assert_eq!(m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().server.scheduler, "lc");
}

/// Upstream sets the source-hash port flag (`mh-port` in ipvsadm) for `mh`, so that one client
/// address is not pinned to one backend; no other scheduler gets a flag. With ClientIP affinity
/// the persistence flag joins it.
#[test]
fn schedulers_get_upstreams_flags() {
    // (scheduler, affinity, flags)
    let cases = [
        ("mh", false, ServiceFlags::SCHED2),
        ("mh", true, ServiceFlags::SCHED2 | ServiceFlags::PERSISTENT),
        ("sh", false, ServiceFlags::empty()),
        ("rr", false, ServiceFlags::empty()),
        ("wlc", true, ServiceFlags::PERSISTENT),
    ];
    for (scheduler, affinity, flags) in cases {
        let mut c = config();
        c.default_scheduler = scheduler.into();
        let mut spec = json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]});
        if affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        let (m, _) = from_objects(c, [&service("web", spec)], [], None);
        let vs = &m.desired().virtual_server(&tcp("10.96.0.10", 80)).unwrap().server;
        assert_eq!(vs.flags, flags, "{scheduler} affinity {affinity}");
    }
}

#[test]
fn malformed_services_are_skipped_with_a_reason_and_others_unaffected() {
    // (spec, a word the reason must contain)
    let cases = [
        (json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}), "clusterIP"),
        (json!({"clusterIP": "10.96.0.11", "ports": [{"port": 0}]}), "port"),
        (json!({"clusterIP": "10.96.0.11", "ports": [{"port": 70000}]}), "port"),
        (json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "ICMP"}]}), "protocol"),
        (json!({"clusterIP": "fd00::11", "ipFamilies": ["IPv4"], "ports": [{"port": 80}]}), "ipFamilies"),
        (json!({"clusterIPs": ["10.96.0.11", "10.96.0.12"], "ports": [{"port": 80}]}), "two"),
        (json!({"type": "NodePort", "clusterIP": "10.96.0.11", "ports": [{"port": 80, "nodePort": -1}]}), "nodePort"),
        (json!({"type": "Weird", "clusterIP": "10.96.0.11", "ports": [{"port": 80}]}), "type"),
        (
            json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
            "timeout",
        ),
        (json!({"ports": [{"port": 80}]}), "clusterIP"),
    ];
    let good = service("good", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    for (spec, word) in cases {
        let bad = service("bad", spec.clone());
        let mut m = new_model(config());
        assert!(m.upsert_service(&good).is_empty());
        // A valid version first: the malformed update must remove it.
        m.upsert_service(&service("bad", json!({"clusterIP": "10.96.0.11", "ports": [{"port": 81}]})));
        let w = m.upsert_service(&bad);
        assert_eq!(w.len(), 1, "{spec}: {w:?}");
        assert_eq!(w[0].object, "Service default/bad");
        assert!(w[0].reason.contains(word) && w[0].reason.contains("skipped"), "{spec}: {}", w[0]);
        assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80"], "{spec}");
        assert!(m.service_info("default", "bad").is_none());
    }
}

/// Source ranges are per family (upstream): a dual-stack LoadBalancer whose ranges are all IPv4
/// is warned about, naming the Service; its IPv6 traffic is not restricted (the netfilter side
/// writes no restriction for a virtual server without a range of its family).
#[test]
fn source_ranges_of_one_family_are_warned_about_for_the_other() {
    let lb = |ranges: serde_json::Value| {
        service_with(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}], "loadBalancerSourceRanges": ranges}),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"ip": "2001:db8::7"}]}}}),
        )
    };
    // (ranges, warnings' reasons)
    let cases: [(serde_json::Value, &[&str]); 3] = [
        (json!(["192.0.2.0/24"]), &["loadBalancerSourceRanges has no IPv6 range: IPv6 traffic is not restricted"]),
        (json!(["192.0.2.0/24", "2001:db8:1::/48"]), &[]),
        (json!([]), &[]),
    ];
    for (ranges, want) in cases {
        let (m, w) = from_objects(config(), [&lb(ranges.clone())], [], None);
        let reasons: Vec<&str> = w.iter().map(|w| w.reason.as_str()).collect();
        assert_eq!(reasons, want, "{ranges}");
        assert!(w.iter().all(|w| w.object == "Service default/lb"));
        assert_eq!(m.desired().len(), 4, "{ranges}: the Service is programmed");
    }
}

/// An externalIP, load balancer ingress IP or source range that cannot be read is skipped with
/// a warning naming the Service and the entry; the rest of the Service is programmed (upstream).
#[test]
fn unreadable_address_entries_skip_only_themselves() {
    let svc = service_with(
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80}],
            "externalIPs": ["not-an-ip", "198.51.100.1"],
            "loadBalancerSourceRanges": ["10.0.0.0/40", "192.0.2.0/24"]}),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3"}, {"ip": "203.0.113.7"}]}}}),
    );
    let (m, w) = from_objects(config(), [&svc], [], None);
    let reasons: Vec<&str> = w.iter().map(|w| w.reason.as_str()).collect();
    assert_eq!(w.len(), 3, "{reasons:?}");
    for (warning, entry) in w.iter().zip(["not-an-ip", "1.2.3", "10.0.0.0/40"]) {
        assert_eq!(warning.object, "Service default/lb");
        assert!(warning.reason.contains(entry) && warning.reason.contains("ignored"), "{}", warning.reason);
    }
    assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 198.51.100.1:80", "TCP 203.0.113.7:80"]);
    let lb = m.desired().virtual_server(&tcp("203.0.113.7", 80)).unwrap();
    assert_eq!(lb.source_ranges, vec!["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]);
}

#[test]
fn two_services_claiming_one_virtual_server_resolve_by_name_in_any_order() {
    let a = service("a", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}], "externalIPs": ["203.0.113.7"]}));
    let b = service("b", json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}], "externalIPs": ["203.0.113.7"]}));
    for order in [[&a, &b], [&b, &a]] {
        let (m, w) = from_objects(Config::new(NODE), order, [], None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(m.desired().virtual_server(&tcp("203.0.113.7", 80)).unwrap().origin.service.name(), "a");
        let mut m = m;
        m.delete_service("default", "a");
        assert_eq!(m.desired().virtual_server(&tcp("203.0.113.7", 80)).unwrap().origin.service.name(), "b");
        assert_eq!(bound(&m), ["10.96.0.11", "203.0.113.7"]);
    }
}

#[test]
fn load_balancer_without_allocated_node_ports_gets_no_node_port_virtual_servers() {
    // allocateLoadBalancerNodePorts: false leaves nodePort unset (or 0): no NodePort, the rest as usual.
    for port in [json!({"port": 80}), json!({"port": 80, "nodePort": 0})] {
        let svc = service_with(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "allocateLoadBalancerNodePorts": false,
                   "ports": [port]}),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}),
        );
        let m = model_of(&[svc], &[]);
        assert_eq!(vs_names(&m), ["TCP 10.96.0.10:80", "TCP 198.51.100.1:80"], "{port}");
    }
}

#[test]
fn node_objects_of_other_nodes_are_ignored_with_a_warning() {
    let mut c = config();
    c.node_port_addresses = vec![NodePortAddress::Primary];
    let mut m = new_model(c);
    assert!(m.upsert_service(&node_port_web()).is_empty());
    assert!(m.set_node(&node("zone-a", NODE_V4)).is_empty());
    let ours = vs_names(&m);
    assert_eq!(ours, ["TCP 10.96.0.10:80", "TCP 192.168.0.10:30080"]);
    m.take_changes();
    // node-b's InternalIP is one of our addresses too: taking its Node would move "primary".
    let w = m.set_node(&node_named("node-b", "zone-b", NODE_V6));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].object, "Node node-b");
    assert!(w[0].reason.contains("ignored"), "{}", w[0]);
    assert_eq!(vs_names(&m), ours);
    assert!(m.take_changes().is_empty());
}

/// One of a Node's `status.addresses`: (type, address).
type NodeAddress<'a> = (&'a str, &'a str);

/// A Node object of [`NODE`] with `addresses` in order.
fn node_with_addresses(addresses: &[NodeAddress]) -> k8s_openapi::api::core::v1::Node {
    let addresses: Vec<_> = addresses.iter().map(|(t, a)| json!({"type": t, "address": a})).collect();
    serde_json::from_value(json!({"metadata": {"name": NODE}, "status": {"addresses": addresses}})).unwrap()
}

#[test]
fn primary_node_port_addresses_are_the_first_internal_ip_of_each_family_else_the_first_external_ip() {
    let svc = service(
        "web",
        json!({"type": "NodePort", "clusterIPs": ["10.96.0.10", "fd00:96::10"], "ipFamilies": ["IPv4", "IPv6"],
               "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    // (the Node's addresses in order, the NodePort addresses)
    let cases: [(&[NodeAddress], &[&str]); 4] = [
        (&[("InternalIP", "192.168.0.10"), ("InternalIP", "192.168.1.10")], &["192.168.0.10"]),
        (&[("ExternalIP", "192.168.1.10"), ("InternalIP", "192.168.0.10")], &["192.168.0.10"]),
        (&[("Hostname", "node-a"), ("ExternalIP", "192.168.1.10")], &["192.168.1.10"]),
        (
            &[("InternalIP", "fd00:1::10"), ("InternalIP", "192.168.1.10"), ("InternalIP", "192.168.0.10")],
            &["192.168.1.10", "fd00:1::10"],
        ),
    ];
    for (addresses, expected) in cases {
        let mut c = config();
        c.node_port_addresses = vec![NodePortAddress::Primary];
        let addrs = ["192.168.0.10", "192.168.1.10", "fd00:1::10"].map(ip).to_vec();
        let (m, w) = from_objects_on(addrs, c, [&svc], [], Some(&node_with_addresses(addresses)));
        assert!(w.is_empty(), "{w:?}");
        let got = node_port_addresses(&m);
        assert_eq!(got, expected, "{addresses:?}");
    }
}

#[test]
fn a_new_primary_address_recomputes_node_ports_only_when_primary_is_configured() {
    let plain = service("plain", json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
    // (nodePortAddresses, Services recomputed when the Node's InternalIP changes)
    let cases: [(&[&str], u64); 2] = [(&[], 0), (&["primary"], 1)];
    for (filters, recomputed) in cases {
        let mut c = config();
        c.node_port_addresses = filters.iter().map(|f| f.parse().unwrap()).collect();
        let first = node_with_addresses(&[("InternalIP", NODE_V4)]);
        let (mut m, _) = from_objects(c, [&node_port_web(), &plain], [], Some(&first));
        let before = m.stats().services_recomputed;
        m.set_node(&node_with_addresses(&[("InternalIP", "192.168.0.11")]));
        assert_eq!(m.stats().services_recomputed - before, recomputed, "{filters:?}");
    }
}

/// Issue 7, item 3: the Node's pod CIDRs, for `detectLocalMode: NodeCIDR` (a bad one is skipped
/// with a warning naming the Node).
#[test]
fn the_nodes_pod_cidrs_are_read_from_its_object() {
    let mut n = node("zone-a", NODE_V4);
    n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        pod_cidrs: Some(vec!["10.244.3.0/24".into(), "fd00:244:3::/64".into(), "nonsense".into()]),
        ..Default::default()
    });
    let mut m = new_model(config());
    let w = m.set_node(&n);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].reason.contains("nonsense"), "{}", w[0]);
    let got: Vec<String> = m.node_pod_cidrs().iter().map(ToString::to_string).collect();
    assert_eq!(got, ["10.244.3.0/24", "fd00:244:3::/64"]);
}
