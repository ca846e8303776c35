//! The nftables side on the VM kernel, with IPVS forwarding real traffic between namespaces:
//! masquerade (outside sources, masqueradeAll, none), the reject of unknown ports on kube-ipvs0
//! addresses (upstream issue 72236), loadBalancerSourceRanges, hairpin, idempotence and cleanup.

mod common;
mod netfilter_support;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::addr;
use integration::{ask_name, in_netns};
use ipnet::IpNet;
use ipvs::{Client, DummyLink, Protocol, RealServer, VirtualServer, VirtualServerId};
use netfilter::{FilterConfig, FilterState, LocalTraffic, MasqueradeRule, Netfilter, Nft, ServiceFilter, Target};
use netfilter_support::{Peer, serve_source};

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dropped connection attempt is given before it counts as dropped.
const DROP_WAIT: Duration = Duration::from_millis(1500);
const TABLE: &str = "kube-ipvs-proxy";

fn prefix(text: &str) -> IpNet {
    text.parse().unwrap()
}

/// The cluster's pod prefixes: the [`Peer::pod`]s are inside, the [`Peer::client`]s outside.
fn config() -> FilterConfig {
    FilterConfig::new(vec![prefix("10.244.0.0/16"), prefix("fd00:244::/32")])
}

fn filter(masquerade: MasqueradeRule, ranges: &[&str], locals: &[(IpAddr, u16)]) -> ServiceFilter {
    ServiceFilter {
        masquerade,
        bound: true,
        source_ranges: ranges.iter().map(|r| prefix(r)).collect(),
        local_endpoints: locals.iter().copied().collect(),
        short_circuit: None,
    }
}

/// Binds `vip` on kube-ipvs0 and balances TCP `vip:port` to `backends` (port 8080).
async fn virtual_server(vip: IpAddr, port: u16, backends: &[IpAddr]) -> Target {
    let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
    let _ = link.add_address(vip).await;
    let ipvs = Client::connect().await.unwrap();
    let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: vip, port };
    ipvs.add_virtual_server(&VirtualServer::new(id, "rr")).await.unwrap();
    for b in backends {
        ipvs.add_real_server(&id, &RealServer::new(*b, 8080, 1)).await.unwrap();
    }
    Target::new(vip, Protocol::Tcp, port)
}

/// Asks `to` from inside `peer`: the answer (the source the server saw), or the error.
fn ask_from(peer: &Peer, to: SocketAddr, timeout: Duration) -> io::Result<String> {
    peer.run(move || ask_name(to, timeout))
}

/// Which address each family's cases use.
fn vip(v6: bool, last: u8) -> IpAddr {
    if v6 { addr(&format!("fd00:96::{last}")) } else { addr(&format!("10.96.0.{last}")) }
}

/// IPv6 forwarding in the test's namespace (`in_netns` turns on only IPv4's).
fn forward_v6() {
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
}

/// The common start of a data-path test: IPv6 forwarding on, and pod 1 answering on port 8080
/// with the source address it sees.
fn source_echo_pod() -> Peer {
    forward_v6();
    let pod = Peer::pod(1);
    pod.serve_source(8080);
    pod
}

/// `nft -j list table` of our table without rule handles, which a restart renumbers when it
/// rewrites the skeleton's rules (same rules, new handles).
fn listing(nft: &Nft) -> Option<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("handle");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(&nft.list_table_json(TABLE).unwrap()?).unwrap();
    strip(&mut v);
    Some(v)
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn backends_see_the_node_or_the_client_as_the_masquerade_rule_says() {
    for v6 in [false, true] {
        in_netns(move || async move {
            let backend = source_echo_pod();
            let (outside, inside) = (Peer::client(2), Peer::pod(3));
            let target = virtual_server(vip(v6, 10), 80, &[backend.addr(v6)]).await;
            let mut netfilter = Netfilter::start(Nft::new(), config()).unwrap();
            let node = backend.gateway(v6);
            // (case, rule, who asks, the source the backend must see)
            let cases = [
                ("outside client, rule outside", MasqueradeRule::OutsideClusterPrefixes, &outside, node),
                ("pod client, rule outside", MasqueradeRule::OutsideClusterPrefixes, &inside, inside.addr(v6)),
                ("outside client, no masquerade", MasqueradeRule::None, &outside, outside.addr(v6)),
                ("pod client, masquerade all", MasqueradeRule::All, &inside, node),
            ];
            for (name, rule, client, expected) in cases {
                netfilter.resync(FilterState::from_services([(target, filter(rule, &[], &[]))])).unwrap();
                let seen = ask_from(client, SocketAddr::new(target.addr, 80), TIMEOUT)
                    .unwrap_or_else(|e| panic!("v6={v6} {name}: {e}"));
                assert_eq!(seen, expected.to_string(), "v6={v6} {name}");
            }
        });
    }
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn unknown_ports_on_service_addresses_are_refused_and_service_ports_work() {
    for v6 in [false, true] {
        in_netns(move || async move {
            let backend = source_echo_pod();
            let client = Peer::client(2);
            let target = virtual_server(vip(v6, 10), 80, &[backend.addr(v6)]).await;
            // A host service on every address: reachable through the ClusterIP without the filter.
            let stop = Arc::new(AtomicBool::new(false));
            let host = TcpListener::bind("[::]:2222").unwrap();
            let host_stop = stop.clone();
            std::thread::spawn(move || serve_source(host, &host_stop));
            let host_port = SocketAddr::new(target.addr, 2222);
            assert!(ask_from(&client, host_port, TIMEOUT).is_ok(), "v6={v6}: host port reachable before the filter");

            let mut netfilter = Netfilter::start(Nft::new(), config()).unwrap();
            netfilter
                .resync(FilterState::from_services([(
                    target,
                    filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[]),
                )]))
                .unwrap();
            let refused = ask_from(&client, host_port, TIMEOUT).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "v6={v6}: {refused}");
            let seen = ask_from(&client, SocketAddr::new(target.addr, 80), TIMEOUT).unwrap();
            assert_eq!(seen, backend.gateway(v6).to_string(), "v6={v6}: the service port works");
            // The host's own addresses are not kube-ipvs0's: untouched.
            assert!(ask_from(&client, SocketAddr::new(client.gateway(v6), 2222), TIMEOUT).is_ok(), "v6={v6}");
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn load_balancer_source_ranges_admit_only_their_sources() {
    for v6 in [false, true] {
        in_netns(move || async move {
            let backend = source_echo_pod();
            let (allowed, other) = (Peer::client(2), Peer::client(3));
            let lb = if v6 { addr("2001:db8::10") } else { addr("203.0.113.10") };
            let target = virtual_server(lb, 80, &[backend.addr(v6)]).await;
            let range = if v6 { "fd00:168:2::/48" } else { "192.168.2.0/24" };
            let mut netfilter = Netfilter::start(Nft::new(), config()).unwrap();
            netfilter
                .resync(FilterState::from_services([(target, filter(MasqueradeRule::None, &[range], &[]))]))
                .unwrap();
            let to = SocketAddr::new(lb, 80);
            assert_eq!(ask_from(&allowed, to, TIMEOUT).unwrap(), allowed.addr(v6).to_string(), "v6={v6}: allowed");
            let dropped = ask_from(&other, to, DROP_WAIT).unwrap_err();
            assert!(
                matches!(dropped.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock),
                "v6={v6}: other source dropped, not refused: {dropped}"
            );
            // Without ranges, anyone.
            netfilter.resync(FilterState::from_services([(target, filter(MasqueradeRule::None, &[], &[]))])).unwrap();
            assert_eq!(ask_from(&other, to, TIMEOUT).unwrap(), other.addr(v6).to_string(), "v6={v6}: unrestricted");
        });
    }
}

/// A node upgraded from a version that kept one set of allowed sources per family, with the
/// protocol in its key (which Linux 6.12 cannot take with Debian 12's `nft`): the proxy's first
/// write reshapes the table, the old set gone with its rule, and the sources still filtered.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_table_of_the_earlier_shape_is_reshaped_and_still_filters_sources() {
    in_netns(|| async {
        let nft = Nft::new();
        let old_shape = format!(
            "add table inet {TABLE}\n\
             add set inet {TABLE} source_allowed_v4 {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr; flags interval; }}\n\
             add element inet {TABLE} source_allowed_v4 {{ 203.0.113.10 . tcp . 80 . 192.168.2.0/24 }}\n\
             add chain inet {TABLE} filter_input {{ type filter hook input priority filter; policy accept; }}\n\
             add rule inet {TABLE} filter_input ip daddr . meta l4proto . th dport . ip saddr != @source_allowed_v4 drop\n"
        );
        // Written as the earlier version did where it could (this kernel may refuse its rule).
        if nft.run(TABLE, "test", &old_shape).is_err() {
            nft.run(TABLE, "test", &old_shape.replace(" meta l4proto ", " ip protocol ")).unwrap();
        }
        let backend = source_echo_pod();
        let (allowed, other) = (Peer::client(2), Peer::client(3));
        let lb = addr("203.0.113.10");
        let target = virtual_server(lb, 80, &[backend.addr(false)]).await;
        let mut netfilter = Netfilter::start(nft.clone(), config()).unwrap();
        netfilter
            .resync(FilterState::from_services([(target, filter(MasqueradeRule::None, &["192.168.2.0/24"], &[]))]))
            .unwrap();
        let table = listing(&nft).expect("our table").to_string();
        assert!(!table.contains("\"source_allowed_v4\""), "the old set is gone: {table}");
        assert!(table.contains("\"source_allowed_tcp_v4\""), "{table}");
        let to = SocketAddr::new(lb, 80);
        assert_eq!(ask_from(&allowed, to, TIMEOUT).unwrap(), allowed.addr(false).to_string(), "allowed");
        assert!(ask_from(&other, to, DROP_WAIT).is_err(), "other sources dropped");
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_pod_reaches_itself_through_its_service() {
    for v6 in [false, true] {
        in_netns(move || async move {
            let pod = source_echo_pod();
            let target = virtual_server(vip(v6, 10), 80, &[pod.addr(v6)]).await;
            let to = SocketAddr::new(target.addr, 80);
            let mut netfilter = Netfilter::start(Nft::new(), config()).unwrap();
            netfilter
                .resync(FilterState::from_services([(
                    target,
                    filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[]),
                )]))
                .unwrap();
            assert!(ask_from(&pod, to, DROP_WAIT).is_err(), "v6={v6}: without hairpin masquerade the pod cannot");
            let hairpin = filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[(pod.addr(v6), 8080)]);
            assert_eq!(netfilter.update([(target, Some(hairpin))]).unwrap(), 1, "v6={v6}: one element added");
            assert_eq!(ask_from(&pod, to, TIMEOUT).unwrap(), pod.gateway(v6).to_string(), "v6={v6}: hairpin");
        });
    }
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_same_state_twice_changes_nothing_and_cleanup_removes_only_our_table() {
    in_netns(|| async {
        forward_v6();
        let nft = Nft::new();
        let state = FilterState::from_services([
            (
                Target::new(addr("10.96.0.10"), Protocol::Tcp, 80),
                filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[(addr("10.244.1.2"), 8080)]),
            ),
            (
                Target::new(addr("203.0.113.10"), Protocol::Udp, 53),
                filter(MasqueradeRule::All, &["192.0.2.0/24", "192.0.2.128/25"], &[]),
            ),
            (Target::new(addr("fd00:96::10"), Protocol::Sctp, 9000), filter(MasqueradeRule::None, &["fd00::/8"], &[])),
        ]);
        let mut netfilter = Netfilter::start(nft.clone(), config()).unwrap();
        netfilter.resync(state.clone()).unwrap();
        let first = listing(&nft).expect("our table exists");
        // Again, through each path: adopt at a restart, full rewrite, no-op update.
        let mut restarted = Netfilter::start(nft.clone(), config()).unwrap();
        assert_eq!(listing(&nft), Some(first.clone()), "adopting keeps the table");
        restarted.resync(state.clone()).unwrap();
        restarted.resync(state.clone()).unwrap();
        let same = state.service(&Target::new(addr("10.96.0.10"), Protocol::Tcp, 80)).cloned();
        assert_eq!(restarted.update([(Target::new(addr("10.96.0.10"), Protocol::Tcp, 80), same)]).unwrap(), 0);
        assert_eq!(listing(&nft), Some(first.clone()), "same state, same table");

        // The kernel's sets read back (every kind of element: concatenations, intervals of
        // concatenations, a map) are what was written: no difference.
        assert_eq!(restarted.verify_sets().unwrap(), 0, "read back as written");
        // Each set's digest as the kernel holds it is the one kept of what was applied.
        let mut reader = netfilter::SetReader::new(TABLE);
        let differing = |reader: &mut netfilter::SetReader, applied: &Netfilter| -> Vec<String> {
            Netfilter::element_sets()
                .into_iter()
                .filter(|set| Some(reader.digest(set).unwrap()) != applied.set_digest(set))
                .collect()
        };
        assert_eq!(differing(&mut reader, &restarted), Vec::<String>::new(), "digests as written");
        // An element deleted and another added behind our back, with no rewrite in between:
        // the read-back finds both and writes only them.
        let edit = "delete element inet kube-ipvs-proxy masq_all_v4 { 203.0.113.10 . udp . 53 }\n\
                    add element inet kube-ipvs-proxy bound_v4 { 10.96.0.99 }\n\
                    delete element inet kube-ipvs-proxy source_allowed_udp_v4 { 203.0.113.10 . 53 . 192.0.2.0/24 }\n";
        nft.run(TABLE, "test", edit).unwrap();
        assert_ne!(listing(&nft), Some(first.clone()));
        assert_eq!(
            differing(&mut reader, &restarted),
            ["masq_all_v4", "bound_v4", "source_allowed_udp_v4"],
            "edited sets"
        );
        assert_eq!(restarted.verify_sets().unwrap(), 3, "two missing, one extra");
        assert_eq!(listing(&nft), Some(first.clone()), "read-back repair");
        assert_eq!(differing(&mut reader, &restarted), Vec::<String>::new(), "digests after the repair");

        // Drift behind our back is repaired by a full reconcile.
        nft.run(TABLE, "test", "flush set inet kube-ipvs-proxy masq_all_v4\n").unwrap();
        restarted.forget();
        restarted.resync(state.clone()).unwrap();
        assert_eq!(listing(&nft), Some(first.clone()), "drift repaired");
        // A delete of an element already gone makes the update refused, then rewritten whole.
        nft.run(TABLE, "test", "flush set inet kube-ipvs-proxy hairpin_v4\n").unwrap();
        let mut smaller = state.clone();
        smaller.set(Target::new(addr("10.96.0.10"), Protocol::Tcp, 80), None);
        restarted.update([(Target::new(addr("10.96.0.10"), Protocol::Tcp, 80), None)]).unwrap();
        let after_update = listing(&nft);
        assert_ne!(after_update, Some(first.clone()));
        let mut fresh = Netfilter::start(nft.clone(), config()).unwrap();
        fresh.resync(smaller).unwrap();
        assert_eq!(listing(&nft), after_update, "the refused update ended as the smaller state");

        nft.run("foreign", "test", "add table inet foreign\nadd chain inet foreign c { type filter hook input priority 0; }\nadd rule inet foreign c tcp dport 22 accept\n").unwrap();
        let foreign = nft.list_table_json("foreign").unwrap().expect("foreign table");
        nft.delete_table(TABLE).unwrap();
        assert_eq!(nft.list_table_json(TABLE).unwrap(), None, "our table is gone");
        assert_eq!(nft.list_table_json("foreign").unwrap(), Some(foreign), "the foreign table is untouched");
        nft.delete_table(TABLE).unwrap();
        let tables: BTreeSet<String> =
            integration::run("nft", &["list", "tables"], None).unwrap().lines().map(str::to_string).collect();
        assert_eq!(tables, BTreeSet::from(["table inet foreign".to_string()]));
    });
}

/// The keeper reads the nftables generation right after its first whole write; any transaction
/// after that, its own or anyone's, moves the kernel's: a table monitor that subscribes later
/// and reads the same number missed nothing.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_settled_generation_is_the_kernels_until_anyone_commits() {
    in_netns(|| async {
        let nft = Nft::new();
        let web = Target::new(addr("10.96.0.10"), Protocol::Tcp, 80);
        let state = FilterState::from_services([(
            web,
            filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[(addr("10.244.1.2"), 8080)]),
        )]);
        let mut netfilter = Netfilter::start(nft.clone(), config()).unwrap();
        assert_eq!(netfilter.settled_generation(), None, "nothing written yet");
        netfilter.resync(state.clone()).unwrap();
        let settled = netfilter.settled_generation().flatten().expect("read after the first write");
        assert_eq!(netfilter::TableMonitor::generation().unwrap(), settled, "nothing committed since");

        // The keeper's own update, then someone else's transaction on another table.
        let other = filter(MasqueradeRule::All, &["192.0.2.0/24"], &[]);
        assert!(netfilter.update([(web, Some(other))]).unwrap() > 0, "one transaction");
        nft.run("elsewhere", "test", "add table inet elsewhere\n").unwrap();
        assert_eq!(netfilter::TableMonitor::generation().unwrap(), settled.wrapping_add(2));
        assert_eq!(netfilter.settled_generation().flatten(), Some(settled), "the first write's, kept");
        nft.delete_table("elsewhere").unwrap();
    })
}

/// Issue 7, item 3: without a cluster prefix of its family the table cannot tell pods by
/// source, but the node's own traffic to a service address leaves with that address as its
/// source (the kernel picks a local destination as source). Unmasqueraded, an endpoint on
/// another node would answer the service address, which that node does not route back: lost.
/// As upstream without a local detector, such traffic is masqueraded; a pod's is not.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_nodes_own_traffic_is_masqueraded_without_a_cluster_prefix() {
    for v6 in [false, true] {
        in_netns(move || async move {
            let backend = source_echo_pod();
            let inside = Peer::pod(3);
            let target = virtual_server(vip(v6, 10), 80, &[backend.addr(v6)]).await;
            let no_prefixes = FilterConfig::new(Vec::new());
            let mut netfilter = Netfilter::start(Nft::new(), no_prefixes).unwrap();
            netfilter
                .resync(FilterState::from_services([(
                    target,
                    filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[]),
                )]))
                .unwrap();
            let to = SocketAddr::new(target.addr, 80);
            let from_node = ask_name(to, TIMEOUT).unwrap_or_else(|e| panic!("v6={v6}: {e}"));
            assert_eq!(from_node, backend.gateway(v6).to_string(), "v6={v6}: the node's request masqueraded");
            let from_pod = ask_from(&inside, to, TIMEOUT).unwrap();
            assert_eq!(from_pod, inside.addr(v6).to_string(), "v6={v6}: a pod's request keeps its source");
        });
    }
}

/// Issue 7, item 2: an `externalTrafficPolicy: Local` load balancer IP without a local endpoint
/// has no real server, so an outside client gets nothing (upstream's IPVS fallback to remote
/// endpoints is its bug); but a pod and the node itself reach the Service through it: their
/// traffic is sent to the ClusterIP (all endpoints) before IPVS, as iptables and nftables modes
/// do, the node's own masqueraded.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn in_cluster_clients_of_a_local_policy_address_without_local_endpoints_reach_the_cluster() {
    in_netns(|| async {
        let backend = source_echo_pod();
        let (outside, pod) = (Peer::client(2), Peer::pod(3));
        let cluster_ip = virtual_server(vip(false, 10), 80, &[backend.addr(false)]).await;
        // The load balancer IP's virtual server, with no real server: no local endpoint.
        let lb = virtual_server(addr("203.0.113.7"), 80, &[]).await;
        let mut netfilter = Netfilter::start(Nft::new(), config()).unwrap();
        let lb_filter = ServiceFilter {
            short_circuit: Some((cluster_ip.addr, cluster_ip.port)),
            ..filter(MasqueradeRule::None, &[], &[])
        };
        netfilter
            .resync(FilterState::from_services([
                (cluster_ip, filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[])),
                (lb, lb_filter),
            ]))
            .unwrap();
        let to = SocketAddr::new(lb.addr, 80);
        let from_node = ask_name(to, TIMEOUT).expect("the node reaches the Service through its LB IP");
        assert_eq!(from_node, backend.gateway(false).to_string(), "the node's own request is masqueraded");
        let from_pod = ask_from(&pod, to, TIMEOUT).expect("a pod reaches the Service through its LB IP");
        assert_eq!(from_pod, pod.addr(false).to_string(), "a pod keeps its source");
        assert!(ask_from(&outside, to, TIMEOUT).is_err(), "an outside client gets no remote endpoint");
    });
}

/// Issue 7, item 3: with `detectLocalMode: InterfaceNamePrefix` pods are told by the interface
/// their traffic arrives on, not by source: the pod behind `kipn3` keeps its source, a client
/// behind `kipn2` is masqueraded, though no cluster prefix is configured.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn pods_told_by_interface_name_prefix() {
    in_netns(|| async {
        let backend = source_echo_pod();
        let (outside, pod) = (Peer::client(2), Peer::pod(3));
        let target = virtual_server(vip(false, 10), 80, &[backend.addr(false)]).await;
        let config =
            FilterConfig { local: LocalTraffic::InterfaceNamePrefix("kipn3".into()), ..FilterConfig::new(Vec::new()) };
        let mut netfilter = Netfilter::start(Nft::new(), config).unwrap();
        netfilter
            .resync(FilterState::from_services([(target, filter(MasqueradeRule::OutsideClusterPrefixes, &[], &[]))]))
            .unwrap();
        let to = SocketAddr::new(target.addr, 80);
        assert_eq!(ask_from(&pod, to, TIMEOUT).unwrap(), pod.addr(false).to_string(), "a pod keeps its source");
        assert_eq!(
            ask_from(&outside, to, TIMEOUT).unwrap(),
            backend.gateway(false).to_string(),
            "the rest is masqueraded"
        );
    });
}
