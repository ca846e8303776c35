//! The daemon (the real binary) against the fake API server, on the VM kernel, when things go
//! away: the daemon itself (kill -9 and restart) and the API server (an outage).

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use integration::{Backend, in_netns};

/// The daemon's counter of kernel writes (every IPVS and address change it makes).
const KERNEL_WRITES: &str = "kubeipvsproxy_kernel_operations_total";
/// The daemon's counter of syncs (full and incremental).
const SYNCS: &str = "kubeipvsproxy_syncs_total";

/// The proxy's nftables table as `nft -j list table` shows it: rules with their handles, and
/// every set's elements (including the recorded digest).
fn nft_table() -> String {
    integration::run("nft", &["-j", "list", "table", "inet", "kube-ipvs-proxy"], None)
        .expect("the proxy's nftables table")
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_killed_daemon_restarts_without_a_failed_request_or_a_kernel_write() {
    in_netns(|| async {
        node_link();
        let b: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("b{i}"), i, 8080).unwrap()).collect();
        let cluster = Cluster::start();
        cluster.apply(&service_yaml("web", "10.96.0.10", Some(30080)));
        cluster.apply(&slice_yaml("web", &[&b[0], &b[1]]));
        let mut first = Daemon::start(&cluster);
        let vs = "TCP  10.96.0.10:80";
        eventually("the Service programmed", PATIENCE, || (serving_reals(vs)? == reals(&[&b[0], &b[1]])).then_some(()));
        let writes = eventually("the first daemon's kernel write count", PATIENCE, || first.metric_sum(KERNEL_WRITES));
        assert!(writes > 0.0, "the first daemon programmed the kernel, so it counted writes");
        let before = ipvs_table();
        // The first full sync, nftables included, is done before the table is read.
        eventually("the first daemon's first sync", PATIENCE, || (first.metric_sum(SYNCS)? >= 1.0).then_some(()));
        let nft_before = nft_table();

        let client = Client::start(&["10.96.0.10:80"]);
        eventually("traffic flowing", PATIENCE, || (client.answered() > 20).then_some(()));
        first.kill_9();
        let second = Daemon::start(&cluster);
        // Synced: its first full sync (after the initial lists) is done.
        eventually("the restarted daemon's first sync", PATIENCE, || (second.metric_sum(SYNCS)? >= 1.0).then_some(()));
        // Rule handles change when the skeleton is rewritten, elements when the sets are: the
        // restart adopted the table as it was, and says so.
        assert_eq!(nft_table(), nft_before, "the restart rewrote the nftables table");
        let log = second.log();
        assert!(log.contains("nftables: adopted"), "the restart did not adopt the nftables table:\n{log}");
        let answered = client.answered();
        // Two more sync periods under load: the periodic reconcile must find nothing to do too.
        std::thread::sleep(SYNC_PERIOD * 2);
        let (ok, failed, errors) = client.finish();
        assert_eq!(failed, 0, "requests failed across the restart: {errors:?}");
        assert!(ok > answered, "traffic kept flowing after the restart");
        // A labelled counter family with no sample is not exported at all; the first daemon
        // showed this binary exports it once it writes, so absence here means no write.
        let metrics = second.metrics_text().expect("the restarted daemon's metrics");
        let writes = second.metric_sum(KERNEL_WRITES).unwrap_or(0.0);
        assert_eq!(writes, 0.0, "the restart wrote to the kernel:\n{metrics}");
        assert_eq!(second.metric_sum("kubeipvsproxy_plan_steps_sum"), Some(0.0), "its syncs planned steps");
        assert_eq!(ipvs_table(), before, "the table changed across the restart");
        let mut names = ask_many("10.96.0.10:80", 4);
        names.sort();
        names.dedup();
        assert_eq!(names, ["b1", "b2"]);
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn an_api_server_outage_keeps_the_kernel_and_changes_apply_when_it_is_back() {
    in_netns(|| async {
        node_link();
        let b: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("b{i}"), i, 8080).unwrap()).collect();
        let cluster = Cluster::start();
        cluster.apply(&service_yaml("web", "10.96.0.10", None));
        cluster.apply(&slice_yaml("web", &[&b[0]]));
        let mut daemon = Daemon::start(&cluster);
        let vs = "TCP  10.96.0.10:80";
        eventually("the Service programmed", PATIENCE, || (serving_reals(vs)? == reals(&[&b[0]])).then_some(()));
        daemon.wait_ready();
        let before = ipvs_table();

        cluster.stop();
        // The change happens while the daemon cannot see it.
        cluster.apply(&slice_yaml("web", &[&b[1]]));
        let client = Client::start(&["10.96.0.10:80"]);
        std::thread::sleep(SYNC_PERIOD * 3);
        let (ok, failed, errors) = client.finish();
        assert!(daemon.running(), "the daemon exited during the outage:\n{}", daemon.log());
        assert_eq!(ipvs_table(), before, "the kernel changed while the API server was away");
        assert_eq!((failed, ok > 0), (0, true), "traffic during the outage: {errors:?}");

        cluster.resume();
        eventually("the change made during the outage applied", Duration::from_secs(60), || {
            (serving_reals(vs)? == reals(&[&b[1]])).then_some(())
        });
        assert_eq!(ask_many("10.96.0.10:80", 2), ["b2", "b2"]);
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_relist_after_410_removes_what_was_deleted_unseen() {
    in_netns(|| async {
        node_link();
        let b1 = Backend::start("b1", 1, 8080).unwrap();
        let cluster = Cluster::start();
        for (name, ip) in [("kept", "10.96.0.10"), ("gone", "10.96.0.11")] {
            cluster.apply(&service_yaml(name, ip, None));
            cluster.apply(&slice_yaml(name, &[&b1]));
        }
        let daemon = Daemon::start(&cluster);
        for vs in ["TCP  10.96.0.10:80", "TCP  10.96.0.11:80"] {
            eventually(&format!("{vs} programmed"), PATIENCE, || serving_reals(vs));
        }
        daemon.wait_ready();

        // The deletion happens while the daemon is cut off, and the history that would have
        // told it is compacted away: only a relist can reveal it.
        let lists = cluster.requests().lists;
        cluster.stop();
        cluster.delete(integration::fake_api::Kind::Service, "default", "gone");
        cluster.delete(integration::fake_api::Kind::EndpointSlice, "default", "gone-slice");
        cluster.compact();
        cluster.resume();
        eventually("the unseen deletion applied after the relist", Duration::from_secs(60), || {
            let table = ipvs_table();
            let gone = !table.contains_key("TCP  10.96.0.11:80") && !bound_addresses().contains("10.96.0.11");
            (gone && table.contains_key("TCP  10.96.0.10:80")).then_some(())
        });
        assert!(cluster.requests().lists > lists, "the daemon caught up without relisting?");
        assert_eq!(ask_many("10.96.0.10:80", 1), ["b1"]);
    });
}
