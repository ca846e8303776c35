//! The loop's own logic (gating, adoption, incremental scope, retries, drift repair) against an
//! in-memory table. This is not a kernel test: the loop against the real kernel is tested in the VM.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs::{RealServer, VirtualServer, VirtualServerId};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{Change, Config, Model, Update};

use super::*;

mod filter_side;
mod memory;
mod refusals;
mod verification;

use memory::*;

// Paused time: the loop's sleeps advance the clock only once every task is idle, so "nothing
// happened within a sync period" is proven without waiting for one.
#[tokio::test(start_paused = true)]
async fn before_the_first_complete_lists_only_additions_are_written() {
    let kernel = MemoryKernel::default();
    // Left by an earlier run: a Service since deleted (bound, so this proxy's to delete) and an
    // endpoint since removed from svc0.
    let (gone, svc0) = (tcp("10.96.0.99"), tcp("10.96.0.1"));
    let old = RealServer::new("10.244.9.9".parse().unwrap(), 8080, 1);
    {
        let mut m = kernel.mem();
        m.bound.insert("10.96.0.99".parse().unwrap());
        m.services.insert(gone, (VirtualServer::new(gone, "rr"), [(old.id, old)].into()));
        m.services.insert(svc0, (VirtualServer::new(svc0, "rr"), [(old.id, old)].into()));
    }
    let shared = cluster(2);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let task = tokio::spawn(SyncLoop::new(kernel.clone(), shared.clone(), reports.clone(), settings()).run());
    shared.feed(Update::Service(Change::Listed));
    shared.feed(Update::EndpointSlice(Change::Listed));
    shared.feed(Update::Node(Change::<Node>::Listed));
    // The node's addresses are still missing: what the lists want so far is added...
    tokio::time::sleep(settings().sync_period * 2).await;
    let mut primed = kernel.writes();
    primed.sort();
    assert_eq!(
        primed,
        [
            "add real server 10.244.1.1:8080 to TCP 10.96.0.1:80",
            "add real server 10.244.1.1:8080 to TCP 10.96.0.2:80",
            "add real server 10.244.1.2:8080 to TCP 10.96.0.1:80",
            "add real server 10.244.1.2:8080 to TCP 10.96.0.2:80",
            "add virtual server TCP 10.96.0.2:80",
        ]
    );
    // ...but nothing is bound (no traffic reaches a virtual server before the full sync writes
    // its nftables elements too), deleted, unbound or drained, and no sync is reported.
    assert!(kernel.mem().bound.contains(&"10.96.0.99".parse().unwrap()) && kernel.mem().bound.len() == 1);
    assert!(kernel.mem().services[&gone].1.contains_key(&old.id));
    assert_eq!(kernel.mem().services[&svc0].1[&old.id].weight, 1);
    assert!(reports.lock().unwrap().0.is_empty());
    assert_eq!(reports.lock().unwrap().1, None, "the lists are not complete yet");
    shared.feed(Update::NodeAddresses(vec!["192.0.2.10".parse().unwrap()]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reports.lock().unwrap().0.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let first = reports.lock().unwrap().0.first().cloned().expect("a sync after the lists");
    assert_eq!(reports.lock().unwrap().1, Some(0), "told of the complete lists before the first sync");
    assert!(first.full);
    assert_eq!(first.virtual_servers, 2);
    // It reports the priming's writes too (metrics count every kernel write).
    assert_eq!(first.steps.get(&("add_real_server", true)), Some(&4), "{first}");
    assert_eq!(first.steps.get(&("bind_address", true)), Some(&2), "{first}");
    // The complete lists: the addresses are bound, the deleted Service goes, the removed
    // endpoint drains (its count is as old as the priming's dump), and the priming's dump
    // served the full sync.
    assert_eq!(
        kernel.writes(),
        [
            "bind 10.96.0.1",
            "bind 10.96.0.2",
            "update real server 10.244.9.9:8080 of TCP 10.96.0.1:80",
            "delete virtual server TCP 10.96.0.99:80",
            "unbind 10.96.0.99",
        ]
    );
    assert_eq!(kernel.mem().services[&svc0].1[&old.id].weight, 0);
    assert_eq!(kernel.mem().dumps, 1);
}

#[tokio::test]
async fn a_restart_with_an_unchanged_cluster_writes_nothing() {
    let kernel = MemoryKernel::default();
    let first = cluster(3);
    listed(&first);
    let mut sync = sync_loop(&kernel, first);
    let report = sync.sync(true).await;
    assert_eq!((report.plan_steps, report.failed), (3 + 3 + 6, 0));
    kernel.writes();

    let restarted = cluster(3);
    listed(&restarted);
    let mut sync = sync_loop(&kernel, restarted);
    let report = sync.sync(true).await;
    assert_eq!(report.plan_steps, 0, "{report}");
    assert!(kernel.writes().is_empty());
}

#[tokio::test]
async fn an_endpoint_change_plans_only_its_service() {
    let kernel = MemoryKernel::default();
    let shared = cluster(50);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    kernel.writes();

    shared.feed(Update::EndpointSlice(Change::Apply(slice("svc7", &["10.244.1.1", "10.244.1.3"]))));
    let report = sync.sync(false).await;
    assert!(!report.full);
    assert_eq!(report.touched_services.len(), 1);
    assert_eq!(report.endpoint_changes, 1);
    // The counters the first sync read are stale by now: the removed TCP real server is
    // drained at weight 0, not deleted on a guess (issue 7, item 5).
    let writes = kernel.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes[0].starts_with("update real server 10.244.1.2:8080 of TCP 10.96.0.8:80"), "{writes:?}");
    assert_eq!(writes[1], "add real server 10.244.1.3:8080 to TCP 10.96.0.8:80");
    // Nothing new: the next incremental sync waits for a count.
    assert_eq!(sync.sync(false).await.plan_steps, 0);
    // The next full reconcile's dump counts it idle: deleted.
    sync.sync(true).await;
    assert_eq!(kernel.writes(), ["delete real server 10.244.1.2:8080 of TCP 10.96.0.8:80"]);
}

#[tokio::test]
async fn failed_steps_are_retried_and_health_keeps_the_oldest_change() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    listed(&shared);
    kernel.mem().fail.insert("add real server 10.244.1.2:8080 to TCP 10.96.0.1:80".into());
    let mut sync = sync_loop(&kernel, shared.clone());
    let report = sync.sync(true).await;
    assert_eq!(report.failed, 1);
    assert_eq!(report.steps.get(&("add_real_server", false)), Some(&1));
    assert!(sync.retry_pending());
    assert!(shared.health().pending_since.is_some(), "unapplied change keeps health's clock running");
    assert!(shared.health().last_synced.is_none());

    let report = sync.sync(false).await;
    assert_eq!((report.plan_steps, report.failed), (1, 0), "{report}");
    assert!(!sync.retry_pending());
    assert!(shared.health().pending_since.is_none());
    assert!(shared.health().last_synced.is_some());
    assert_eq!(kernel.mem().services.values().next().map(|(_, r)| r.len()), Some(2));
}

#[tokio::test]
async fn a_full_reconcile_repairs_drift() {
    let kernel = MemoryKernel::default();
    let shared = cluster(2);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared);
    sync.sync(true).await;
    kernel.writes();
    {
        // Someone else deletes a virtual server, changes another's scheduler, removes an address.
        let mut m = kernel.mem();
        let first = *m.services.keys().next().unwrap();
        m.services.remove(&first);
        if let Some((vs, _)) = m.services.values_mut().next() {
            vs.scheduler = "lc".into();
        }
        m.bound.remove(&"10.96.0.2".parse::<IpAddr>().unwrap());
    }
    assert_eq!(sync.sync(false).await.plan_steps, 0, "the incremental path trusts its record");
    let report = sync.sync(true).await;
    assert_eq!(report.failed, 0);
    let writes = kernel.writes();
    assert_eq!(
        writes,
        vec![
            "bind 10.96.0.2".to_string(),
            "add virtual server TCP 10.96.0.1:80".to_string(),
            "add real server 10.244.1.1:8080 to TCP 10.96.0.1:80".to_string(),
            "add real server 10.244.1.2:8080 to TCP 10.96.0.1:80".to_string(),
            "update virtual server TCP 10.96.0.2:80".to_string(),
        ]
    );
}

#[tokio::test]
async fn relist_completions_queue_nothing() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    assert!(shared.health().pending_since.is_none());
    // A relist that found nothing new ends with its list completion only.
    listed(&shared);
    assert!(shared.health().pending_since.is_none(), "nothing to apply, nothing pending");
    // The same object again (same resourceVersion) is filtered before it gets here; a real
    // change is pending until synced.
    shared.feed(Update::Service(Change::Apply(service("svc0", "10.96.0.100"))));
    assert!(shared.health().pending_since.is_some());
    sync.sync(false).await;
    assert!(shared.health().pending_since.is_none());
}

#[tokio::test]
async fn big_plans_go_in_bounded_batches() {
    let kernel = MemoryKernel::default();
    // 3,000 Services of one virtual server and two real servers: 9,000 operations.
    let shared = Arc::new(Shared::new(Model::new(Config::new("node-a")), "node-a"));
    for i in 0..3000 {
        let name = format!("svc{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        shared.feed(Update::Service(Change::Apply(service(&name, &ip))));
        shared.feed(Update::EndpointSlice(Change::Apply(slice(&name, &["10.244.1.1", "10.244.1.2"]))));
    }
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared);
    let report = sync.sync(true).await;
    assert_eq!((report.plan_steps, report.failed), (3000 * 4, 0));
    assert_eq!(kernel.mem().batches, vec![MAX_BATCH, 9000 - MAX_BATCH]);
    assert_eq!(sync.sync(true).await.plan_steps, 0, "the split batches programmed everything");
}

/// Issue 7, item 12: on a node address only what this proxy recorded as made is deleted; an
/// operator's virtual server there survives every full sync, whatever its port; after a restart
/// the record (a file under /run in the daemon) still names this proxy's leftovers.
#[tokio::test]
async fn on_node_addresses_only_recorded_virtual_servers_are_deleted() {
    let node =
        |port| VirtualServerId::Tuple { protocol: ipvs::Protocol::Tcp, addr: "192.0.2.10".parse().unwrap(), port };
    let (foreign, leftover) = (node(31000), node(31001));
    let kernel = MemoryKernel::default();
    for id in [foreign, leftover] {
        kernel.mem().services.insert(id, (VirtualServer::new(id, "rr"), BTreeMap::new()));
    }
    let dir = std::env::temp_dir().join(format!("kip-sync-ownership-{}", std::process::id()));
    let record = crate::OwnershipRecord::in_dir(&dir);
    record.write(&[leftover]).unwrap();
    let shared = cluster(1);
    listed(&shared);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel.clone(), shared, reports, settings()).with_ownership_record(record.clone());
    sync.sync(true).await;
    let writes = kernel.writes();
    assert!(writes.contains(&format!("delete virtual server {leftover}")), "{writes:?}");
    assert!(!writes.iter().any(|w| w.contains("31000")), "{writes:?}");
    sync.sync(true).await;
    assert!(kernel.writes().is_empty(), "the operator's entry survives the next full sync too");
    assert!(kernel.mem().services.contains_key(&foreign));
    assert!(record.read().unwrap().is_empty(), "the deleted leftover left the record");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ClusterIP whose bind fails: the record, written right after the IPVS writes, counted its
/// virtual server as on a bound address; it is on an unbound one after all, so the record is
/// written again naming it (a restart must know it as this proxy's).
#[tokio::test]
async fn a_failed_bind_rewrites_the_ownership_record() {
    let kernel = MemoryKernel::default();
    kernel.mem().fail.insert("bind 10.96.0.1".to_string());
    let dir = std::env::temp_dir().join(format!("kip-sync-failed-bind-{}", std::process::id()));
    let record = crate::OwnershipRecord::in_dir(&dir);
    let shared = cluster(1);
    listed(&shared);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel.clone(), shared, reports, settings()).with_ownership_record(record.clone());
    let report = sync.sync(true).await;
    assert_eq!(report.steps.get(&("bind_address", false)), Some(&1), "{report}");
    assert_eq!(record.read().unwrap(), [tcp("10.96.0.1")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn udp(value: serde_json::Value) -> serde_json::Value {
    let text = value.to_string().replace("\"TCP\"", "\"UDP\"");
    serde_json::from_str(&text).unwrap()
}

/// Issue 7, item 4: after the sync that gives a UDP virtual server its first endpoint, and the
/// one that removes an endpoint, the loop forgets the conntrack entries those changes made
/// stale, once; TCP changes and changes among serving endpoints forget nothing.
#[tokio::test]
async fn stale_udp_flows_are_forgotten_after_the_sync_that_made_them_stale() {
    let kernel = MemoryKernel::default();
    let shared = Arc::new(Shared::new(Model::new(Config::new("node-a")), "node-a"));
    let dns: Service =
        serde_json::from_value(udp(serde_json::to_value(service("dns", "10.96.0.53")).unwrap())).unwrap();
    let dns_slice = |ips: &[&str]| -> EndpointSlice {
        serde_json::from_value(udp(serde_json::to_value(slice("dns", ips)).unwrap())).unwrap()
    };
    shared.feed(Update::Service(Change::Apply(dns)));
    shared.feed(Update::Service(Change::Apply(service("web", "10.96.0.80"))));
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    let forgotten =
        |writes: Vec<String>| -> Vec<String> { writes.into_iter().filter(|w| w.starts_with("forget")).collect() };
    assert_eq!(forgotten(kernel.writes()), Vec::<String>::new(), "no endpoint yet: nothing stale");

    shared.feed(Update::EndpointSlice(Change::Apply(dns_slice(&["10.244.1.1"]))));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("web", &["10.244.1.1"]))));
    sync.sync(false).await;
    assert_eq!(forgotten(kernel.writes()), ["forget conntrack entries of protocol 17 to 10.96.0.53:80"]);

    shared.feed(Update::EndpointSlice(Change::Apply(dns_slice(&["10.244.1.1", "10.244.1.2"]))));
    sync.sync(false).await;
    assert_eq!(forgotten(kernel.writes()), Vec::<String>::new(), "a second endpoint: nothing stale");

    shared.feed(Update::EndpointSlice(Change::Apply(dns_slice(&["10.244.1.2"]))));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("web", &["10.244.1.2"]))));
    sync.sync(false).await;
    assert_eq!(
        forgotten(kernel.writes()),
        ["forget conntrack entries of protocol 17 to 10.96.0.53:80 answered by 10.244.1.1:8080"]
    );
}

/// Issue 10: an address someone removes from kube-ipvs0 is bound again by the next incremental
/// sync, which the removal's notification triggers, not at the next full reconcile. A removal
/// of an address no longer wanted (the proxy's own unbind) is no work at all.
#[tokio::test]
async fn a_wanted_address_removed_from_the_link_is_bound_again_incrementally() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    kernel.writes();

    kernel.mem().bound.remove(&"10.96.0.1".parse::<IpAddr>().unwrap());
    shared.feed(Update::Unbound(vec!["10.96.0.1".parse().unwrap()]));
    let report = sync.sync(false).await;
    assert!(!report.full);
    assert_eq!(kernel.writes(), ["bind 10.96.0.1"]);

    shared.feed(Update::Unbound(vec!["10.96.9.9".parse().unwrap()]));
    assert!(shared.lock().unbound.is_empty(), "an address not wanted is not queued");
    assert_eq!(sync.sync(false).await.plan_steps, 0);
}
