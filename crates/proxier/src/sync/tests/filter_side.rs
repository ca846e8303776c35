//! The nftables side of a sync: what the keeper is handed, its retries after failures, and its
//! write beside the kernel's binds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use model::{Change, Update};

use super::memory::*;
use crate::filter::{Filter, FilterStarter, FilterWork};
use crate::shared::Shared;
use crate::sync::SyncLoop;

/// A filter that records what it was asked, failing as many times as its second field says.
#[derive(Clone, Default)]
struct RecordingFilter(Arc<Mutex<Vec<&'static str>>>, Arc<Mutex<usize>>);

impl Filter for RecordingFilter {
    fn apply(&mut self, work: FilterWork) -> Result<usize, netfilter::NftError> {
        self.0.lock().unwrap().push(match work {
            FilterWork::Full(_) => "full",
            FilterWork::Only(_) => "only",
            FilterWork::Rebuild(_) => "rebuild",
        });
        let mut failures = self.1.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(netfilter::NftError::MarkBit { table: "kube-ipvs-proxy".into(), bit: 40 });
        }
        Ok(1)
    }
}

/// An edit of the table by someone else that comes while a failed whole write waits for its
/// retry is not forgotten: the retry rebuilds the table.
#[tokio::test(start_paused = true)]
async fn an_edit_during_the_nftables_backoff_is_repaired_at_the_retry() {
    let kernel = MemoryKernel::default();
    let shared = cluster(2);
    listed(&shared);
    let works = RecordingFilter::default();
    *works.1.lock().unwrap() = 1;
    let w = works.clone();
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| Ok(Box::new(w.clone()) as Box<dyn Filter>));
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel, shared.clone(), reports, settings()).with_filter_starter(starter);
    assert!(sync.sync(true).await.filter_failed, "the first whole write fails");
    shared.filter_edited();
    assert!(sync.sync(false).await.filter_failed, "before the retry is due");
    tokio::time::advance(Duration::from_secs(1)).await;
    let report = sync.sync(false).await;
    assert!(report.succeeded(), "{report}");
    assert_eq!(*works.0.lock().unwrap(), ["full", "rebuild"]);
}

/// Issue 8, item 4: a nftables side that cannot be set up is retried, after 1 s, then 2 s, ...;
/// until it is, each sync fails (health reports it, a sync before the retry is due included)
/// and a retry stays due; once it is, it gets the whole state first, then the changes only.
#[tokio::test(start_paused = true)]
async fn a_failing_nftables_setup_fails_the_syncs_and_is_retried() {
    let kernel = MemoryKernel::default();
    let shared = cluster(2);
    listed(&shared);
    let works = RecordingFilter::default();
    let attempts = Arc::new(Mutex::new(0));
    let (w, a) = (works.clone(), attempts.clone());
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| {
        let mut n = a.lock().unwrap();
        *n += 1;
        if *n < 3 {
            Err(netfilter::NftError::MarkBit { table: "kube-ipvs-proxy".into(), bit: 40 })
        } else {
            Ok(Box::new(w.clone()) as Box<dyn Filter>)
        }
    });
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel, shared.clone(), reports, settings()).with_filter_starter(starter);
    for attempt in 1..=2 {
        let report = sync.sync(attempt == 1).await;
        assert!(report.filter_failed && !report.succeeded(), "attempt {attempt}: {report}");
        assert!(shared.health().sync_failing);
        assert!(sync.retry_pending(), "attempt {attempt}: a retry is due");
        // A sync before the retry is due does not try, and still fails.
        let report = sync.sync(false).await;
        assert!(report.filter_failed, "attempt {attempt}, early sync: {report}");
        assert_eq!(*attempts.lock().unwrap(), attempt);
        tokio::time::advance(Duration::from_secs(attempt as u64)).await;
    }
    assert!(works.0.lock().unwrap().is_empty());
    let report = sync.sync(false).await;
    assert!(report.succeeded(), "{report}");
    assert!(!shared.health().sync_failing && shared.health().last_synced.is_some());
    shared.feed(Update::Service(Change::Apply(service("svc9", "10.96.0.99"))));
    sync.sync(false).await;
    assert_eq!(*works.0.lock().unwrap(), ["full", "only"]);
    assert!(!sync.retry_pending());
}

/// A running loop over two Services whose nftables side can never be set up, with the count
/// of attempts.
fn loop_with_a_failing_filter_starter() -> (Arc<Shared>, Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let shared = cluster(2);
    let attempts = Arc::new(Mutex::new(0));
    let a = attempts.clone();
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| {
        *a.lock().unwrap() += 1;
        Err(netfilter::NftError::MarkBit { table: "kube-ipvs-proxy".into(), bit: 40 })
    });
    let reports = Arc::new(Mutex::new(Reports::default()));
    let sync = SyncLoop::new(MemoryKernel::default(), shared.clone(), reports, settings()).with_filter_starter(starter);
    (shared, attempts, tokio::spawn(sync.run()))
}

/// A nftables side the kernel keeps refusing is tried less and less often (each attempt runs
/// `nft`): over two idle minutes about eight attempts, not one a second.
#[tokio::test(start_paused = true)]
async fn a_nftables_side_that_keeps_failing_is_tried_less_and_less_often() {
    let (shared, attempts, task) = loop_with_a_failing_filter_starter();
    listed(&shared);
    tokio::time::sleep(Duration::from_secs(120)).await;
    task.abort();
    // At 0, 1, 3, 7, 15, 31, 61 and 91 s (the waits double up to 30 s).
    let n = *attempts.lock().unwrap();
    assert!((6..=10).contains(&n), "{n} attempts in 120 s");
    assert!(shared.health().sync_failing);
}

/// While the lists arrive (the priming looks every 200 ms), a failing nftables setup waits for
/// its retry too: over ten seconds a handful of attempts, not fifty.
#[tokio::test(start_paused = true)]
async fn a_failing_nftables_setup_waits_for_its_retry_while_the_lists_arrive() {
    let (shared, attempts, task) = loop_with_a_failing_filter_starter();
    // The Node is in; Services keep arriving, their list not yet complete.
    shared.feed(Update::Node(Change::<Node>::Listed));
    for i in 0..100 {
        shared.feed(Update::Service(Change::Apply(service(&format!("new{i}"), &format!("10.96.1.{i}")))));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    // At 0, 1, 3 and 7 s.
    let n = *attempts.lock().unwrap();
    assert!((2..=5).contains(&n), "{n} attempts in 10 s");
}

/// Issue 10: when someone else edits the nftables table, the next sync (incremental, woken by
/// the edit) replaces the table whole; the syncs before and after carry only their changes.
#[tokio::test]
async fn a_foreign_edit_of_the_table_is_repaired_by_the_next_sync() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    listed(&shared);
    let works = RecordingFilter::default();
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel, shared.clone(), reports, settings()).with_filter(Box::new(works.clone()));
    sync.sync(true).await;
    shared.filter_edited();
    assert!(!sync.sync(false).await.full);
    shared.feed(Update::Service(Change::Apply(service("svc9", "10.96.0.99"))));
    sync.sync(false).await;
    assert_eq!(*works.0.lock().unwrap(), ["full", "rebuild", "only"]);
}

/// An nftables side that, when written, runs `look` (what the test checks at that moment) and
/// then lets the kernel's held binds finish.
struct OpensTheBinds {
    look: Box<dyn FnMut() + Send>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Filter for OpensTheBinds {
    fn apply(&mut self, _: FilterWork) -> Result<usize, netfilter::NftError> {
        (self.look)();
        self.open.send_replace(true);
        Ok(1)
    }
}

/// Holds `kernel`'s binds until the nftables side returned (built with `look`) is written.
fn binds_held_until_written(kernel: &MemoryKernel, look: impl FnMut() + Send + 'static) -> Box<dyn Filter> {
    let (open, gate) = tokio::sync::watch::channel(false);
    kernel.mem().binds_gate = Some(gate);
    Box::new(OpensTheBinds { look: Box::new(look), open })
}

/// The nftables side is written while the kernel still binds the sync's addresses (a cold
/// start's 10,000 take seconds), not after them; the binds are recorded once done, and the
/// addresses' unbinds wait for them.
#[tokio::test(start_paused = true)]
async fn the_nftables_side_is_written_while_the_kernel_binds() {
    let kernel = MemoryKernel::default();
    let bound_when_written = Arc::new(Mutex::new(Vec::new()));
    let (k, seen) = (kernel.clone(), bound_when_written.clone());
    let filter = binds_held_until_written(&kernel, move || seen.lock().unwrap().push(k.mem().bound.len()));
    let shared = cluster(3);
    listed(&shared);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel.clone(), shared.clone(), reports, settings()).with_filter(filter);
    let Ok(report) = tokio::time::timeout(Duration::from_secs(60), sync.sync(true)).await else {
        panic!("the sync waited for the binds before it wrote the nftables side");
    };
    assert!(report.succeeded(), "{report}");
    assert_eq!(*bound_when_written.lock().unwrap(), [0], "written before any address was bound");
    assert_eq!(kernel.mem().bound.len(), 3);
    assert!(sync.observed().is_bound(&"10.96.0.3".parse().unwrap()), "the binds are recorded");

    shared.feed(Update::Service(Change::Delete(service("svc2", "10.96.0.3"))));
    shared.feed(Update::Service(Change::Apply(service("svc9", "10.96.0.99"))));
    let report = sync.sync(false).await;
    assert!(report.succeeded(), "{report}");
    let writes = kernel.writes();
    let at = |w: &str| writes.iter().position(|x| x == w).unwrap_or_else(|| panic!("no {w} in {writes:?}"));
    assert!(at("bind 10.96.0.99") < at("unbind 10.96.0.3"), "{writes:?}");
    assert_eq!(bound_when_written.lock().unwrap().len(), 2);
}

/// A virtual server made on a node address is in the ownership record as soon as the IPVS
/// writes are done, before the nftables side and the binds (a daemon killed meanwhile must
/// still know it its own after a restart); the addresses being bound are not in it.
#[tokio::test(start_paused = true)]
async fn the_ownership_record_names_a_new_node_port_before_the_binds_are_done() {
    let kernel = MemoryKernel::default();
    let shared = cluster(0);
    let mut web: serde_json::Value = serde_json::to_value(service("web", "10.96.0.10")).unwrap();
    web["spec"]["type"] = "NodePort".into();
    web["spec"]["ports"][0]["nodePort"] = 30080.into();
    shared.feed(Update::Service(Change::Apply(serde_json::from_value(web).unwrap())));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("web", &["10.244.1.1"]))));
    listed(&shared);
    let dir = std::env::temp_dir().join(format!("kip-sync-record-early-{}", std::process::id()));
    let record = crate::OwnershipRecord::in_dir(&dir);
    let read = Arc::new(Mutex::new(Vec::new()));
    let (r, seen) = (record.clone(), read.clone());
    let filter = binds_held_until_written(&kernel, move || seen.lock().unwrap().push(r.read().unwrap()));
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync = SyncLoop::new(kernel.clone(), shared, reports, settings())
        .with_ownership_record(record.clone())
        .with_filter(filter);
    let Ok(report) = tokio::time::timeout(Duration::from_secs(60), sync.sync(true)).await else {
        panic!("the sync waited for the binds before it wrote the nftables side");
    };
    assert!(report.succeeded(), "{report}");
    let node_port = ipvs::VirtualServerId::Tuple {
        protocol: ipvs::Protocol::Tcp,
        addr: "192.0.2.10".parse().unwrap(),
        port: 30080,
    };
    assert_eq!(*read.lock().unwrap(), [vec![node_port]], "the record when nftables was written");
    assert_eq!(record.read().unwrap(), [node_port], "and after the binds");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Setting the nftables side up runs `nft` (and `iptables` where the FORWARD policy drops), for
/// seconds when the kernel loads its modules meanwhile: the runtime's other tasks (the health
/// and debug endpoints) go on. With a single worker, a task spawned beside the loop must run
/// while the starter blocks, or the starter gives up waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_runtime_serves_other_tasks_while_the_nftables_side_is_set_up() {
    let shared = cluster(1);
    listed(&shared);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, mut start_seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Whether the starter's wait was ended by the release (false: it timed out).
    let (ended, mut end_seen) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| {
        let _ = started.send(());
        // Blocks as `nft` does; only another task on the runtime can end the wait in time.
        let _ = ended.send(released.recv_timeout(Duration::from_secs(20)).is_ok());
        Ok(Box::new(RecordingFilter::default()) as Box<dyn Filter>)
    });
    let reports = Arc::new(Mutex::new(Reports::default()));
    let sync = SyncLoop::new(MemoryKernel::default(), shared, reports, settings()).with_filter_starter(starter);
    let task = tokio::spawn(sync.run());
    start_seen.recv().await.unwrap();
    tokio::spawn(async move { release.send(()) }).await.unwrap().unwrap();
    let released_in_time = end_seen.recv().await.unwrap();
    task.abort();
    assert!(released_in_time, "the runtime ran nothing else while the starter blocked");
}
