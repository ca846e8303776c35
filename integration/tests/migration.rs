//! Issue 9, migration: a node that ran upstream kube-proxy 1.30.3 in IPVS mode (its kernel state
//! restored from `crates/kube-ipvs-proxy/tests/fixtures/upstream-1.30`: IPVS table, kube-ipvs0's
//! addresses, ipsets, iptables and ip6tables rules) switches to this daemon while requests flow
//! without pause through a Service's ClusterIP and NodePort: no request fails, and the table is
//! adopted, not rebuilt. Then upstream's iptables leftovers, which reject an outside client's
//! connection to a Service port added after the switch, are removed with
//! `cleanup --upstream-leftovers`.

mod daemon_support;
mod netfilter_support;

use std::net::SocketAddr;
use std::time::Duration;

use daemon_support::*;
use integration::{in_netns, ip, ipvsadm, proxy_binary, run};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/kube-ipvs-proxy/tests/fixtures/upstream-1.30");
const PATIENCE: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURE}/{name}")).unwrap()
}

/// Restores what upstream left: kube-ipvs0 and its addresses, the IPVS table, the ipsets and
/// both families' iptables rules.
fn restore_upstream_state() {
    ipvsadm(&["-C"]).unwrap();
    lay_down_upstream_state();
}

/// What upstream kube-proxy writes for the fixture's cluster, on a node that must hold none of
/// it yet: every step fails on a leftover (the link exists, a virtual server exists, ...).
fn lay_down_upstream_state() {
    ip(&["link", "add", "kube-ipvs0", "type", "dummy"]).unwrap();
    for line in fixture("kube-ipvs0.txt").lines() {
        let mut words = line.split_whitespace();
        if let (Some("inet" | "inet6"), Some(address)) = (words.next(), words.next()) {
            ip(&["addr", "add", address, "dev", "kube-ipvs0"]).unwrap();
        }
    }
    run("ipvsadm", &["-R"], Some(&fixture("ipvsadm-Sn.txt"))).unwrap();
    run("ipset", &["restore"], Some(&fixture("ipset-save.txt"))).unwrap();
    run("iptables-restore", &[], Some(&fixture("iptables-save.txt"))).unwrap();
    run("ip6tables-restore", &[], Some(&fixture("ip6tables-save.txt"))).unwrap();
}

/// The `Conns` counter of virtual server `vs` (`TCP 10.96.1.2:80`): it only grows while the
/// kernel keeps the virtual server, and restarts from zero if it is deleted and added again.
fn connections(vs: &str) -> u64 {
    let want: Vec<&str> = vs.split_whitespace().collect();
    let listing = ipvsadm(&["-Ln", "--stats", "--exact"]).unwrap();
    let line = listing.lines().find(|l| l.split_whitespace().take(2).eq(want.iter().copied()));
    line.and_then(|l| l.split_whitespace().nth(2)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn switching_from_upstream_ipvs_mode_fails_no_request_and_adopts_the_table() {
    in_netns(|| async {
        ipvsadm(&["-Ln"]).unwrap(); // IPVS loaded: its settings exist in this namespace.
        for name in ["net/ipv4/vs/conntrack", "net/ipv4/ip_forward"] {
            std::fs::write(format!("/proc/sys/{name}"), "1").unwrap();
        }
        node_link();
        // Service diff/nodeport (ClusterIP 10.96.1.2:80, NodePort 30080): backends 10.244.1.2
        // and 10.244.2.2 on 8080.
        let b1 = integration::Backend::start("b1", 1, 8080).unwrap();
        let b2 = integration::Backend::start("b2", 2, 8080).unwrap();
        restore_upstream_state();
        let cluster_ip = "TCP 10.96.1.2:80";
        let node_port = format!("TCP {NODE_IP}:30080");

        // Upstream's state serves on its own before the switch.
        let load = Client::start(&["10.96.1.2:80", &format!("{NODE_IP}:30080")]);
        eventually("upstream's state serving", PATIENCE, || (load.answered() >= 20).then_some(()));
        let before = (connections(cluster_ip), connections(&node_port));

        let cluster = Cluster::start();
        cluster.apply(&fixture("cluster.yaml"));
        let flags = [
            "--sync-period=2s".to_string(),
            "--min-sync-period=0s".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--cluster-cidr=10.244.0.0/16,fd00:244::/64".into(),
            "--conntrack-max-per-core=0".into(),
        ];
        let daemon = Daemon::start_with_env(&cluster, &flags, &[("KUBE_IPVS_PROXY_LOG", "info,proxier=debug")]);
        eventually("the daemon ready", PATIENCE, || (daemon.healthz_status() == 200).then_some(()));
        // Requests through several of its syncs, with its nftables table in place.
        let ready_at = load.answered();
        eventually("requests answered", PATIENCE, || (load.answered() >= ready_at + 200).then_some(()));
        let (ok, failed, errors) = load.finish();
        assert_eq!(failed, 0, "{failed} of {} requests failed: {errors:?}\n{}", ok + failed, daemon.log());
        assert!(b1.served() > 0 && b2.served() > 0, "both backends served");

        // Adopted: the same virtual servers, never deleted (their counters kept growing).
        let after = (connections(cluster_ip), connections(&node_port));
        assert!(after.0 > before.0 && after.1 > before.1, "counters restarted: {before:?} -> {after:?}");
        assert!(
            run("nft", &["list", "table", "inet", "kube-ipvs-proxy"], None).is_ok(),
            "the daemon's own nftables table is in place"
        );

        // A port added after the switch: programmed, but upstream's frozen KUBE-IPVS-FILTER
        // rejects new connections to it (its address is in KUBE-IPVS-IPS, the port in no set).
        let moved = fixture("cluster.yaml").replace("{name: http, port: 80,", "{name: http, port: 81,");
        cluster.apply(&moved);
        eventually("port 81 listed", PATIENCE, || {
            ipvsadm(&["-Ln"]).unwrap().contains("TCP  10.96.1.2:81 rr").then_some(())
        });
        let ask = |target: &str| integration::ask_name(target.parse().unwrap(), Duration::from_secs(2));
        // A client outside the node (192.168.5.2): its connections pass the INPUT hook.
        let client = netfilter_support::Peer::client(5);
        let ask_outside = |target: &str| {
            let to: SocketAddr = target.parse().unwrap();
            client.run(move || integration::ask_name(to, Duration::from_secs(2)))
        };
        let node_port_target = format!("{NODE_IP}:30080");
        ask_outside(&node_port_target).expect("the outside client reaches the NodePort");
        let refused = ask_outside("10.96.1.2:81").expect_err("upstream's leftovers let the new port through");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "rejected: {refused}");

        let out = run(proxy_binary().to_str().unwrap(), &["cleanup", "--upstream-leftovers"], None).unwrap();
        for save in ["iptables-save", "ip6tables-save"] {
            let rules = run(save, &[], None).unwrap();
            assert!(!rules.contains("KUBE-"), "{save} after cleanup --upstream-leftovers:\n{rules}\n{out}");
        }
        let sets = run("ipset", &["list", "-n"], None).unwrap();
        assert!(!sets.contains("KUBE-"), "ipsets after cleanup --upstream-leftovers:\n{sets}\n{out}");
        for target in ["10.96.1.2:81", &format!("{NODE_IP}:30080")] {
            let who = ask(target).unwrap_or_else(|e| panic!("{target} after the leftovers went: {e}\n{out}"));
            assert!(who == b1.name() || who == b2.name(), "{target} answered {who}");
        }
        let who = ask_outside("10.96.1.2:81").unwrap_or_else(|e| panic!("outside client, new port: {e}\n{out}"));
        assert!(who == b1.name() || who == b2.name(), "the outside client got {who}");
        let now = connections(&node_port);
        assert!(
            now > after.1,
            "the adopted table is untouched: {node_port} counted {} then {now} connections\n{}\n{}",
            after.1,
            ipvsadm(&["-Ln", "--stats", "--exact"]).unwrap(),
            daemon.log()
        );
    });
}

/// Issue 9: on a node whose iptables use the legacy backend (`x_tables`, invisible to
/// nftables), `cleanup --upstream-leftovers` removes upstream's chains there too, and then its
/// ipsets, which those rules referenced; kubelet's chains and the host's policy stay.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn upstreams_leftovers_in_the_legacy_backend_and_its_ipsets_are_removed() {
    in_netns(|| async {
        run("ipset", &["restore"], Some(&fixture("ipset-save.txt"))).unwrap();
        run("iptables-legacy-restore", &[], Some(&fixture("iptables-save.txt"))).unwrap();
        run("ip6tables-legacy-restore", &[], Some(&fixture("ip6tables-save.txt"))).unwrap();
        run("iptables-legacy", &["-N", "KUBE-KUBELET-CANARY"], None).unwrap();
        // While the rules reference them, the sets cannot go.
        assert!(run("ipset", &["destroy", "KUBE-CLUSTER-IP"], None).is_err());

        let out = run(proxy_binary().to_str().unwrap(), &["cleanup", "--upstream-leftovers"], None)
            .unwrap_or_else(|e| panic!("cleanup --upstream-leftovers: {e}"));
        for save in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            let rules = run(save, &[], None).unwrap();
            let left: Vec<&str> =
                rules.lines().filter(|l| l.contains("KUBE-") && !l.contains("KUBE-KUBELET-CANARY")).collect();
            assert!(left.is_empty(), "{save} after cleanup --upstream-leftovers: {left:?}\n{out}");
        }
        assert!(
            run("iptables-legacy-save", &[], None).unwrap().contains(":KUBE-KUBELET-CANARY"),
            "kubelet's chain stays"
        );
        let sets = run("ipset", &["list", "-n"], None).unwrap();
        assert!(!sets.contains("KUBE-"), "ipsets after cleanup --upstream-leftovers:\n{sets}\n{out}");
        assert!(out.contains("destroyed ipset KUBE-CLUSTER-IP"), "{out}");
    });
}

/// Issue 9, the way back: after this proxy ran (its IPVS entries, kube-ipvs0, its nftables
/// table, its FORWARD accepts under a drop policy), `cleanup` leaves the node as upstream
/// kube-proxy expects a node it starts on: what upstream writes for the same cluster (its IPVS
/// table, link, ipsets and iptables rules, from the fixture) lays down without a conflict, and
/// serves, inside the node and from outside.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn after_cleanup_upstreams_state_lays_down_and_serves() {
    in_netns(|| async {
        node_link();
        let b1 = integration::Backend::start("b1", 1, 8080).unwrap();
        let b2 = integration::Backend::start("b2", 2, 8080).unwrap();
        run("iptables", &["-w", "-P", "FORWARD", "DROP"], None).unwrap();
        let cluster = Cluster::start();
        cluster.apply(&fixture("cluster.yaml"));
        let daemon = Daemon::start_with_flags(
            &cluster,
            &[
                "--sync-period=2s".into(),
                "--cluster-cidr=10.244.0.0/16,fd00:244::/64".into(),
                "--conntrack-max-per-core=0".into(),
            ],
        );
        // Ready: its first sync has ended, the record of its NodePorts written.
        eventually("the daemon ready", PATIENCE, || (daemon.healthz_status() == 200).then_some(()));
        assert!(ask_many("10.96.1.2:80", 1)[0].starts_with('b'));
        drop(daemon);

        // The record of what the daemon made on node addresses is where the daemon kept it.
        let state = state_dir();
        let out =
            run(proxy_binary().to_str().unwrap(), &["cleanup", "--state-dir", state.to_str().unwrap()], None).unwrap();
        assert_eq!(ipvsadm(&["-Sn"]).unwrap().trim(), "", "IPVS entries left:\n{out}");
        assert!(ip(&["link", "show", "kube-ipvs0"]).is_err(), "kube-ipvs0 left:\n{out}");
        let tables = run("nft", &["list", "tables"], None).unwrap();
        assert!(!tables.contains("kube-ipvs-proxy"), "{tables}\n{out}");
        assert!(!run("iptables-save", &[], None).unwrap().contains("KUBE-IPVS-PROXY"), "{out}");

        lay_down_upstream_state();
        for target in ["10.96.1.2:80", &format!("{NODE_IP}:30080")] {
            let who = integration::ask_name(target.parse().unwrap(), Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("{target} on upstream's state: {e}"));
            assert!(who == b1.name() || who == b2.name(), "{target} answered {who}");
        }
        let client = netfilter_support::Peer::client(5);
        let to: SocketAddr = format!("{NODE_IP}:30080").parse().unwrap();
        let who = client.run(move || integration::ask_name(to, Duration::from_secs(2))).unwrap();
        assert!(who == b1.name() || who == b2.name(), "the outside client got {who}");
    });
}
