//! The priming: what the loop writes while the first lists still arrive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs::{RealServer, VirtualServer, VirtualServerId};
use k8s_openapi::api::core::v1::Node;
use model::{Change, Config, Model, Update};

use super::memory::*;
use crate::filter::{Filter, FilterStarter, FilterWork};
use crate::shared::Shared;
use crate::sync::SyncLoop;

// Paused time: the loop's sleeps advance the clock only once every task is idle, so "nothing
// happened within a sync period" is proven without waiting for one.
#[tokio::test(start_paused = true)]
async fn before_the_first_complete_lists_only_additions_are_written() {
    let kernel = MemoryKernel::default();
    // Left by an earlier run: a Service since deleted (bound, so this proxy's to delete) and an
    // endpoint since removed from svc0.
    let tcp =
        |addr: &str| VirtualServerId::Tuple { protocol: ipvs::Protocol::Tcp, addr: addr.parse().unwrap(), port: 80 };
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
    // (With no nftables side to wait for, an address is bound once its virtual servers have
    // their real servers.)
    assert_eq!(
        primed,
        [
            "add real server 10.244.1.1:8080 to TCP 10.96.0.1:80",
            "add real server 10.244.1.1:8080 to TCP 10.96.0.2:80",
            "add real server 10.244.1.2:8080 to TCP 10.96.0.1:80",
            "add real server 10.244.1.2:8080 to TCP 10.96.0.2:80",
            "add virtual server TCP 10.96.0.2:80",
            "bind 10.96.0.1",
            "bind 10.96.0.2",
        ]
    );
    // ...but nothing is deleted, unbound or drained, and no sync is reported.
    assert!(kernel.mem().bound.contains(&"10.96.0.99".parse().unwrap()) && kernel.mem().bound.len() == 3);
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
    // The complete lists: the deleted Service goes, the removed endpoint drains (its count is
    // as old as the priming's dump), and the priming's dump served the full sync.
    assert_eq!(
        kernel.writes(),
        [
            "update real server 10.244.9.9:8080 of TCP 10.96.0.1:80",
            "delete virtual server TCP 10.96.0.99:80",
            "unbind 10.96.0.99",
        ]
    );
    assert_eq!(kernel.mem().services[&svc0].1[&old.id].weight, 0);
    assert_eq!(kernel.mem().dumps, 1);
}

/// A nftables side that logs its work into the kernel's write log (so that the order of
/// elements and binds shows), with a table that is new or a restart's.
#[derive(Clone)]
struct LoggingFilter {
    kernel: MemoryKernel,
    new_table: bool,
}

impl Filter for LoggingFilter {
    fn apply(&mut self, work: FilterWork) -> Result<usize, netfilter::NftError> {
        let line = match work {
            FilterWork::Only(updates) => {
                let targets: Vec<String> = updates.iter().map(|(t, _)| t.to_string()).collect();
                format!("elements of {}", targets.join(", "))
            }
            FilterWork::Full(_) => "all elements".into(),
            FilterWork::Rebuild(_) => "rebuild".into(),
        };
        self.kernel.mem().writes.push(line);
        Ok(1)
    }

    fn writes_early(&self) -> bool {
        self.new_table
    }
}

/// A loop whose nftables side is `filter`, started with web (one endpoint) and db (none yet)
/// while the lists are still arriving, the Node in (its list complete) or not.
fn priming_with(
    kernel: &MemoryKernel,
    filter: LoggingFilter,
    node_listed: bool,
) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
    let shared = Arc::new(Shared::new(Model::new(Config::new("node-a")), "node-a"));
    if node_listed {
        shared.feed(Update::Node(Change::<Node>::Listed));
    }
    shared.feed(Update::Service(Change::Apply(service("web", "10.96.0.1"))));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("web", &["10.244.1.1"]))));
    shared.feed(Update::Service(Change::Apply(service("db", "10.96.0.2"))));
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| Ok(Box::new(filter.clone()) as Box<dyn Filter>));
    let reports = Arc::new(Mutex::new(Reports::default()));
    let sync = SyncLoop::new(kernel.clone(), shared.clone(), reports, settings()).with_filter_starter(starter);
    (shared, tokio::spawn(sync.run()))
}

/// Issue 10, cold start: in a table of its own making, a Service's nftables elements and then
/// its address go in while the lists still arrive, once its virtual server has real servers;
/// one without endpoints yet waits for them (no connection meets a half-made data path). The
/// full sync then has no address left to bind.
#[tokio::test(start_paused = true)]
async fn a_new_table_gets_each_services_elements_before_its_address_while_the_lists_arrive() {
    let kernel = MemoryKernel::default();
    let (shared, task) = priming_with(&kernel, LoggingFilter { kernel: kernel.clone(), new_table: true }, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        kernel.writes(),
        [
            "add virtual server TCP 10.96.0.1:80",
            "add real server 10.244.1.1:8080 to TCP 10.96.0.1:80",
            "add virtual server TCP 10.96.0.2:80",
            "elements of TCP 10.96.0.1:80",
            "bind 10.96.0.1",
        ]
    );
    shared.feed(Update::EndpointSlice(Change::Apply(slice("db", &["10.244.1.2"]))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        kernel.writes(),
        ["add real server 10.244.1.2:8080 to TCP 10.96.0.2:80", "elements of TCP 10.96.0.2:80", "bind 10.96.0.2"]
    );
    listed(&shared);
    tokio::time::sleep(Duration::from_secs(1)).await;
    task.abort();
    assert_eq!(kernel.writes(), ["all elements"], "the full sync binds nothing more");
}

/// A restart's table (there at start) is left for the full sync to adopt or rewrite in one
/// transaction: no element and no address goes in while the lists arrive.
#[tokio::test(start_paused = true)]
async fn a_restarts_table_gets_nothing_and_no_address_is_bound_before_the_lists_are_complete() {
    let kernel = MemoryKernel::default();
    let (shared, task) = priming_with(&kernel, LoggingFilter { kernel: kernel.clone(), new_table: false }, true);
    shared.feed(Update::EndpointSlice(Change::Apply(slice("db", &["10.244.1.2"]))));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let primed = kernel.writes();
    assert_eq!(primed.len(), 4, "{primed:?}");
    assert!(primed.iter().all(|w| w.starts_with("add ")), "{primed:?}");
    listed(&shared);
    tokio::time::sleep(Duration::from_secs(1)).await;
    task.abort();
    assert_eq!(kernel.writes(), ["bind 10.96.0.1", "bind 10.96.0.2", "all elements"]);
}

/// Services programmed before the nftables side could be set up (it waits for the Node, whose
/// pod CIDRs it needs) get their elements and addresses as soon as it is, with no further
/// change arriving to wake the loop.
#[tokio::test(start_paused = true)]
async fn addresses_waiting_for_the_nftables_side_are_bound_once_it_is_set_up() {
    let kernel = MemoryKernel::default();
    let (shared, task) = priming_with(&kernel, LoggingFilter { kernel: kernel.clone(), new_table: true }, false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let primed = kernel.writes();
    assert_eq!(primed.len(), 3, "{primed:?}");
    assert!(primed.iter().all(|w| w.starts_with("add ")), "{primed:?}");
    shared.feed(Update::Node(Change::<Node>::Listed));
    tokio::time::sleep(Duration::from_secs(1)).await;
    task.abort();
    assert_eq!(kernel.writes(), ["elements of TCP 10.96.0.1:80", "bind 10.96.0.1"]);
}
