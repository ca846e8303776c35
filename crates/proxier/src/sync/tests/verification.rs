//! The loop with its verification (paused time): drift found by the spread reads is repaired
//! without a whole-table dump, and a read that races the loop's writes undoes none of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs::{RealServer, RealServerId, VirtualServerId};
use model::{Change, Update};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::memory::*;
use crate::shared::Shared;
use crate::sync::SyncLoop;
use crate::verify::VerifySettings;

const VERIFY: VerifySettings =
    VerifySettings { virtual_servers: Duration::from_secs(30), real_servers: Duration::from_secs(60) };

fn vs(i: usize) -> VirtualServerId {
    tcp(&format!("10.96.0.{}", i + 1))
}

fn rs(addr: &str) -> RealServerId {
    RealServerId { addr: addr.parse().unwrap(), port: 8080 }
}

/// Runs the loop with a verification over `kernel`, and waits for its adopting sync.
async fn start(
    kernel: &MemoryKernel,
    shared: &Arc<Shared>,
    gate: Option<Arc<Semaphore>>,
) -> (JoinHandle<()>, Arc<Mutex<Reports>>) {
    start_with(kernel, shared, MemoryReader { gate, ..MemoryReader::of(kernel) }, None).await
}

/// [`start`] with `reader`, and `filter` as the nftables side.
async fn start_with(
    kernel: &MemoryKernel,
    shared: &Arc<Shared>,
    reader: MemoryReader,
    filter: Option<MemorySets>,
) -> (JoinHandle<()>, Arc<Mutex<Reports>>) {
    listed(shared);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut sync =
        SyncLoop::new(kernel.clone(), shared.clone(), reports.clone(), settings()).with_verifier(reader, VERIFY);
    if let Some(filter) = filter {
        sync = sync.with_filter(Box::new(filter));
    }
    let task = tokio::spawn(sync.run());
    wait_for(|| !reports.lock().unwrap().0.is_empty()).await;
    kernel.writes();
    (task, reports)
}

/// Sleeps (paused time) until `done`, at most a minute.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..6_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within a minute");
}

/// A virtual server someone deletes is noticed by the count at the next tick and made again
/// after one list, seconds later, not at the end of the period.
#[tokio::test(start_paused = true)]
async fn a_virtual_server_deleted_by_someone_else_is_counted_missing_and_made_again_within_seconds() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let (task, _) = start(&kernel, &shared, None).await;
    kernel.mem().services.remove(&vs(3));
    tokio::time::sleep(Duration::from_secs(3)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!(m.services.get(&vs(3)).map(|(_, rss)| rss.len()), Some(2));
    assert_eq!(m.writes.len(), 3, "{:?}", m.writes);
    assert_eq!(m.dumps, 1, "only the adopting sync dumps the whole table");
    assert_eq!(m.reads.0, 1, "one list, asked for by the count");
    assert!(m.counts >= 2, "{}", m.counts);
}

/// With nothing changed, the virtual servers are counted every tick and listed once a round
/// (120 of them two a tick: 60 s), not every sync period (30 s).
#[tokio::test(start_paused = true)]
async fn with_nothing_changed_the_list_is_read_once_a_round_and_the_count_every_tick() {
    let kernel = MemoryKernel::default();
    let shared = cluster(120);
    let (task, _) = start(&kernel, &shared, None).await;
    tokio::time::sleep(Duration::from_secs(130)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!(m.writes, Vec::<String>::new());
    assert_eq!(m.reads.0, 2, "lists over 130 s with a 60 s round");
    assert!(m.counts >= 125, "{}", m.counts);
}

/// A deletion the count cannot see (someone else added one at the same time) is found within
/// the round, by the read of its real servers or the round's list.
#[tokio::test(start_paused = true)]
async fn a_virtual_server_swapped_for_another_is_made_again_within_the_round() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let (task, _) = start(&kernel, &shared, None).await;
    {
        let mut m = kernel.mem();
        m.services.remove(&vs(3));
        let other = tcp("192.0.2.1");
        m.services.insert(other, (ipvs::VirtualServer::new(other, "rr"), Default::default()));
    }
    // Counted at each tick, equal: no list. (Its real servers are read at the fourth tick,
    // which finds it gone.)
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(!kernel.mem().services.contains_key(&vs(3)));
    assert_eq!(kernel.mem().reads.0, 0, "the counts were equal: no list");
    tokio::time::sleep(Duration::from_secs(60)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!(m.services.get(&vs(3)).map(|(_, rss)| rss.len()), Some(2));
    assert!(m.services.contains_key(&tcp("192.0.2.1")), "someone else's is left alone");
}

/// Without a count (a reader that cannot), the list is read every sync period, as the only
/// way to see a missing virtual server within it.
#[tokio::test(start_paused = true)]
async fn without_a_count_the_list_is_read_every_period() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let reader = MemoryReader { counting: false, ..MemoryReader::of(&kernel) };
    let (task, _) = start_with(&kernel, &shared, reader, None).await;
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(kernel.mem().reads.0, 0);
    tokio::time::sleep(Duration::from_secs(32)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!((m.reads.0, m.counts), (2, 0), "lists at 30 s and 60 s");
}

#[tokio::test(start_paused = true)]
async fn real_servers_deleted_or_altered_are_repaired_within_the_round_a_slice_at_a_time() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let (task, _) = start(&kernel, &shared, None).await;
    let (gone, altered) = {
        let mut m = kernel.mem();
        let rss = &mut m.services.get_mut(&vs(5)).unwrap().1;
        let gone = *rss.keys().next().unwrap();
        rss.remove(&gone);
        let rss = &mut m.services.get_mut(&vs(17)).unwrap().1;
        let altered = rss.values_mut().next().unwrap();
        altered.weight = 9;
        (gone, altered.id)
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Spread: 20 virtual servers over a 60 s round is one a second, not all at once.
    assert!(kernel.mem().reads.1 <= 10, "{:?}", kernel.mem().reads);
    tokio::time::sleep(Duration::from_secs(52)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!(m.services[&vs(5)].1.get(&gone).map(|r| r.weight), Some(1));
    assert_eq!(m.services[&vs(17)].1.get(&altered).map(|r| r.weight), Some(1));
    assert!(m.reads.1 >= 20 && m.reads.2 >= 1, "every real server and the addresses read once: {:?}", m.reads);
    assert_eq!(m.dumps, 1);
    assert_eq!(m.writes.len(), 2, "{:?}", m.writes);
}

#[tokio::test(start_paused = true)]
async fn a_change_is_applied_while_a_read_is_in_flight_and_the_read_undoes_nothing() {
    let kernel = MemoryKernel::default();
    let shared = cluster(3);
    let gate = Arc::new(Semaphore::new(0));
    // A reader without a count lists every period: the list is read at 30 s and held, a
    // dump still in flight.
    let reader = MemoryReader { gate: Some(gate.clone()), counting: false, ..MemoryReader::of(&kernel) };
    let (task, reports) = start_with(&kernel, &shared, reader, None).await;
    tokio::time::sleep(Duration::from_millis(30_500)).await;
    assert_eq!(kernel.mem().reads.0, 1);
    shared.feed(Update::Service(Change::Apply(service("new", "10.96.0.50"))));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("new", &["10.244.1.9"]))));
    shared.feed(Update::Service(Change::Delete(service("svc0", "10.96.0.1"))));
    let new = tcp("10.96.0.50");
    wait_for(|| kernel.mem().services.contains_key(&new) && !kernel.mem().services.contains_key(&vs(0))).await;
    let applied = kernel.writes();
    assert!(!applied.is_empty());
    // The read now arrives, older than those writes: it lacks the new one and lists the deleted.
    let syncs = reports.lock().unwrap().0.len();
    gate.add_permits(1);
    wait_for(|| reports.lock().unwrap().0.len() > syncs).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    task.abort();
    assert_eq!(kernel.writes(), Vec::<String>::new(), "the stale read made the loop write");
    let reports = reports.lock().unwrap();
    let verification = &reports.0[syncs];
    assert!(verification.full && verification.plan_steps == 0, "{verification}");
    assert!(kernel.mem().services[&new].1.contains_key(&rs("10.244.1.9")));
}

#[tokio::test(start_paused = true)]
async fn a_graceful_removal_completes_at_the_verification_on_a_fresh_count() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    let (task, _) = start(&kernel, &shared, None).await;
    shared.feed(Update::EndpointSlice(Change::Apply(slice("svc0", &["10.244.1.1"]))));
    let leaving = rs("10.244.1.2");
    let weight = |k: &MemoryKernel| k.mem().services[&vs(0)].1.get(&leaving).map(|r: &RealServer| r.weight);
    wait_for(|| weight(&kernel) == Some(0)).await;
    // No count since the adopting dump: it drains (weight 0) until one says it is idle.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(weight(&kernel), Some(0));
    tokio::time::sleep(Duration::from_secs(6)).await;
    task.abort();
    assert_eq!(weight(&kernel), None, "deleted at the verification, which counted 0 connections");
    assert_eq!(kernel.mem().dumps, 1);
}

/// A change that comes while a verification sync completes hundreds of graceful removals waits
/// for one slice of them, not all: the rest follow it, a slice a sync, still on the
/// verification's counts.
#[tokio::test(start_paused = true)]
async fn a_change_during_a_verification_sync_waits_for_one_slice_of_its_graceful_removals() {
    let kernel = MemoryKernel::default();
    let shared = cluster(100);
    let (task, reports) = start(&kernel, &shared, None).await;
    // One endpoint of each Service leaves: 100 real servers drain until the verification counts them.
    for i in 0..100 {
        shared.feed(Update::EndpointSlice(Change::Apply(slice(&format!("svc{i}"), &["10.244.1.1"]))));
    }
    wait_for(|| (0..100).all(|i| kernel.mem().services[&vs(i)].1[&rs("10.244.1.2")].weight == 0)).await;
    kernel.writes();
    let change = shared.clone();
    kernel.mem().on_delete = Some(Box::new(move || {
        change.feed(Update::Service(Change::Apply(service("new", "10.96.1.1"))));
    }));
    // All of them go within the verification's second, the change's add among them.
    wait_for(|| (0..100).all(|i| !kernel.mem().services[&vs(i)].1.contains_key(&rs("10.244.1.2")))).await;
    let writes = kernel.writes();
    let added = writes.iter().position(|w| w == "add virtual server TCP 10.96.1.1:80").expect("the change applied");
    let waited_for = writes[..added].iter().filter(|w| w.contains("10.244.1.2")).count();
    assert!((1..=32).contains(&waited_for), "the change waited for {waited_for} deletions: {writes:?}");
    assert!(kernel.mem().services.contains_key(&tcp("10.96.1.1")));
    task.abort();
    let reports = reports.lock().unwrap();
    let verification = reports.0.iter().rev().find(|r| r.verification).unwrap();
    assert_eq!(verification.graceful_left, 100 - waited_for, "{verification}");
    assert_eq!(reports.0.iter().filter(|r| r.verification).count(), 1, "the rest waited for another verification");
    assert_eq!(kernel.mem().dumps, 1);
}

/// A step that keeps failing neither holds the graceful removals' slices back nor is retried
/// without the retry delay while slices remain: a sync whose only work is the retry takes a
/// slice too.
#[tokio::test(start_paused = true)]
async fn a_step_that_keeps_failing_holds_no_slice_of_graceful_removals_back() {
    let kernel = MemoryKernel::default();
    let shared = cluster(100);
    let (task, _) = start(&kernel, &shared, None).await;
    let failing = "add virtual server TCP 10.96.1.1:80".to_string();
    kernel.mem().fail_always.insert(failing.clone());
    shared.feed(Update::Service(Change::Apply(service("new", "10.96.1.1"))));
    for i in 0..100 {
        shared.feed(Update::EndpointSlice(Change::Apply(slice(&format!("svc{i}"), &["10.244.1.1"]))));
    }
    wait_for(|| (0..100).all(|i| !kernel.mem().services[&vs(i)].1.contains_key(&rs("10.244.1.2")))).await;
    task.abort();
    // Removed at the first verification (30 s), the failing add retried about once a second.
    let attempts = kernel.mem().writes.iter().filter(|w| **w == failing).count();
    assert!(attempts <= 40, "{attempts} attempts in about 31 s");
}

/// An nftables set that differs from what was applied (an element lost without a notification)
/// is found by its digest at a verification and repaired; one that does not is never listed.
#[tokio::test(start_paused = true)]
async fn an_nftables_set_that_differs_is_found_by_its_digest_and_repaired() {
    let kernel = MemoryKernel::default();
    let shared = cluster(3);
    let sets = MemorySets::default();
    let reader = MemoryReader { sets: Some((sets.clone(), None)), ..MemoryReader::of(&kernel) };
    let (task, _) = start_with(&kernel, &shared, reader, Some(sets.clone())).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(sets.0.lock().unwrap().repairs, 0, "equal digests: nothing listed");
    sets.0.lock().unwrap().kernel += 7;
    tokio::time::sleep(Duration::from_secs(30)).await;
    task.abort();
    let m = sets.0.lock().unwrap();
    assert_eq!((m.repairs, m.kernel), (1, m.applied));
}

/// A set read that began before the loop wrote the set (its digest older than the write) is
/// not taken for drift.
#[tokio::test(start_paused = true)]
async fn a_set_read_older_than_a_write_of_the_set_repairs_nothing() {
    let kernel = MemoryKernel::default();
    let shared = cluster(3);
    let sets = MemorySets::default();
    let gate = Arc::new(Semaphore::new(0));
    let reader = MemoryReader { sets: Some((sets.clone(), Some(gate.clone()))), ..MemoryReader::of(&kernel) };
    let (task, _) = start_with(&kernel, &shared, reader, Some(sets.clone())).await;
    // The set is read at 30 s and held; meanwhile a change writes it.
    tokio::time::sleep(Duration::from_millis(30_500)).await;
    let applied = sets.0.lock().unwrap().applied;
    shared.feed(Update::Service(Change::Apply(service("new", "10.96.0.50"))));
    wait_for(|| sets.0.lock().unwrap().applied > applied).await;
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    task.abort();
    assert_eq!(sets.0.lock().unwrap().repairs, 0, "the stale digest was taken for drift");
}

/// The kernel counts no IPv6 virtual servers: with one in the record, the list is read every
/// sync period after all (one at 31 s here, where an IPv4-only cluster of this size has its
/// first at 61 s, the second round's start).
#[tokio::test(start_paused = true)]
async fn with_an_ipv6_virtual_server_the_list_is_read_every_period() {
    let kernel = MemoryKernel::default();
    let shared = cluster(120);
    shared.feed(Update::Service(Change::Apply(service("six", "fd00::10"))));
    let (task, _) = start(&kernel, &shared, None).await;
    assert!(kernel.mem().services.keys().any(|id| id.family() == ipvs::Family::V6));
    tokio::time::sleep(Duration::from_secs(45)).await;
    task.abort();
    assert_eq!(kernel.mem().reads.0, 1);
}

/// A count that fails is reported once; the list is then read every period instead, so that a
/// deleted virtual server is still seen within it.
#[tokio::test(start_paused = true)]
async fn a_failing_count_is_reported_once_and_the_list_read_every_period_instead() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let reader = MemoryReader { count_fails: true, ..MemoryReader::of(&kernel) };
    let (task, reports) = start_with(&kernel, &shared, reader, None).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!((m.counts, m.reads.0), (1, 2), "one count asked, lists at 30 s and 60 s");
    let failures: usize = reports.lock().unwrap().0.iter().map(|r| r.read_failures).sum();
    assert_eq!(failures, 1);
}

/// A list that skipped a virtual server the kernel holds (IPVS resumes a dump by position, so
/// writes meanwhile, in any network namespace, can shift one past it) is no proof it is gone:
/// it is read back, found as recorded, and nothing is written or reported. Before, it was
/// reported gone and added again, which the kernel refused, and then read back.
#[tokio::test(start_paused = true)]
async fn a_virtual_server_a_list_skipped_is_read_back_and_nothing_is_written() {
    let kernel = MemoryKernel::default();
    let shared = cluster(20);
    let reader = MemoryReader { counting: false, skip: vec![vs(3)], ..MemoryReader::of(&kernel) };
    let (task, reports) = start_with(&kernel, &shared, reader, None).await;
    // Without a count the list is read every period (30 s); the sync after it reads vs(3) back.
    wait_for(|| kernel.mem().reads.0 == 1).await;
    let synced = reports.lock().unwrap().0.len();
    wait_for(|| reports.lock().unwrap().0.len() > synced).await;
    // Then someone really deletes it: the next list's read back finds it gone and makes it again.
    kernel.mem().services.remove(&vs(3));
    assert_eq!(kernel.writes(), Vec::<String>::new(), "nothing written for a skipped entry");
    wait_for(|| kernel.mem().services.contains_key(&vs(3))).await;
    task.abort();
    let m = kernel.mem();
    assert_eq!(m.services[&vs(3)].1.len(), 2);
    assert_eq!(m.writes.len(), 3, "the virtual server and its two real servers: {:?}", m.writes);
    let reports = reports.lock().unwrap();
    assert_eq!(reports.0.iter().map(|r| r.failed + r.read_failures).sum::<usize>(), 0);
}
