//! Priming with an nftables side: addresses bound while the lists arrive, each after its
//! virtual servers and its nftables elements, when the sets are known.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use model::{Change, Update};
use netfilter::FilterState;

use super::memory::*;
use crate::filter::{Filter, FilterStarter, FilterWork};
use crate::sync::{SyncLoop, SyncReport};

/// An nftables side that logs each write among the kernel's writes (to show their order), and
/// knows what its sets hold (a table made at start: updates applied to it) or not (an adopted
/// one).
struct LoggingFilter {
    kernel: MemoryKernel,
    known: Option<FilterState>,
}

impl Filter for LoggingFilter {
    fn apply(&mut self, work: FilterWork) -> Result<usize, netfilter::NftError> {
        let (logged, updates) = match work {
            FilterWork::Full(_) => ("nftables: the whole state".to_string(), Vec::new()),
            FilterWork::Sweep(updates) => (format!("nftables: a sweep of {} targets", updates.len()), updates),
            FilterWork::Only(updates) => (format!("nftables: {} targets", updates.len()), updates),
            FilterWork::Rebuild(_) => ("nftables: rebuilt".to_string(), Vec::new()),
        };
        self.kernel.mem().writes.push(logged);
        if let Some(known) = self.known.as_mut() {
            for (target, filter) in updates {
                known.set(target, filter);
            }
        }
        Ok(1)
    }

    fn known(&self) -> Option<&FilterState> {
        self.known.as_ref()
    }
}

/// Runs a loop over two Services whose lists are in but for the node's addresses, with an
/// nftables side that knows its sets or not; returns the kernel's writes while the lists
/// arrive, then those of the full sync once they are complete (and that sync's report).
async fn prime_then_complete(known: bool) -> (Vec<String>, Vec<String>, SyncReport) {
    let kernel = MemoryKernel::default();
    let k = kernel.clone();
    let starter: FilterStarter = Box::new(move |_: &[ipnet::IpNet]| {
        let known = known.then(FilterState::new);
        Ok(Box::new(LoggingFilter { kernel: k.clone(), known }) as Box<dyn Filter>)
    });
    let shared = cluster(0);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let sync = SyncLoop::new(kernel.clone(), shared.clone(), reports.clone(), settings()).with_filter_starter(starter);
    let task = tokio::spawn(sync.run());
    // The nftables side is set up after the first round that knows the Node: svc0 arrives
    // with it, svc1 after it.
    shared.feed(Update::Node(Change::<Node>::Listed));
    for (name, ip) in [("svc0", "10.96.0.1"), ("svc1", "10.96.0.2")] {
        shared.feed(Update::Service(Change::Apply(service(name, ip))));
        shared.feed(Update::EndpointSlice(Change::Apply(slice(name, &["10.244.1.1", "10.244.1.2"]))));
        tokio::time::sleep(settings().sync_period).await;
    }
    shared.feed(Update::Service(Change::Listed));
    shared.feed(Update::EndpointSlice(Change::Listed));
    tokio::time::sleep(settings().sync_period).await;
    let primed = kernel.writes();
    assert!(reports.lock().unwrap().0.is_empty(), "no sync before the lists are complete");
    shared.feed(Update::NodeAddresses(vec!["192.0.2.10".parse().unwrap()]));
    while reports.lock().unwrap().0.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    let report = reports.lock().unwrap().0[0].clone();
    (primed, kernel.writes(), report)
}

/// Issue 10, cold start: with a table made at start (its sets known, empty), an address is
/// bound while the lists arrive, after its virtual server and its nftables elements; one that
/// arrived before the nftables side was set up waits for the full sync, which reports the
/// priming's binds with its own.
#[tokio::test(start_paused = true)]
async fn with_known_nftables_sets_the_priming_binds_after_the_elements() {
    let (primed, full, report) = prime_then_complete(true).await;
    let position = |w: &str| primed.iter().position(|p| p == w).unwrap_or_else(|| panic!("{w} in {primed:?}"));
    let elements = position("nftables: 1 targets");
    assert!(position("add virtual server TCP 10.96.0.2:80") < elements, "{primed:?}");
    assert!(position("bind 10.96.0.2") > elements, "{primed:?}");
    assert!(!primed.contains(&"bind 10.96.0.1".to_string()), "bound before its nftables elements: {primed:?}");
    // The full sync's nftables work is what the priming did not write: svc0's target.
    assert_eq!(full, ["bind 10.96.0.1", "nftables: a sweep of 1 targets"]);
    assert_eq!(report.steps.get(&("bind_address", true)), Some(&2), "{report}");
    assert!(report.succeeded(), "{report}");
}

/// An adopted table's sets are unknown until the full sync: the priming binds nothing and
/// writes no element, as without an nftables side.
#[tokio::test(start_paused = true)]
async fn with_unknown_nftables_sets_the_priming_binds_nothing() {
    let (primed, full, report) = prime_then_complete(false).await;
    assert!(primed.iter().any(|w| w.starts_with("add virtual server")), "{primed:?}");
    assert!(!primed.iter().any(|w| w.starts_with("bind") || w.starts_with("nftables")), "{primed:?}");
    assert_eq!(full, ["bind 10.96.0.1", "bind 10.96.0.2", "nftables: the whole state"]);
    assert_eq!(report.steps.get(&("bind_address", true)), Some(&2), "{report}");
}
