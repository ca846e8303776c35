//! Priming: programming what the first lists want while they still arrive (issue 10's cold
//! start). At 10,000 Services the lists take seconds to arrive and decode; the kernel can be
//! adding meanwhile. Only additions: a list not yet complete cannot say what is no longer
//! wanted, so deletions, unbinds and graceful removals (a real server not yet listed looks
//! removed) wait for the full sync that follows the complete lists. And only the virtual
//! servers of addresses this proxy binds: a NodePort, on a node address, takes traffic the
//! moment it exists, so it waits for the full sync too.
//!
//! Their addresses are bound too once the nftables sets are known (a table made at start, not
//! an adopted one): in each round after its virtual servers and its nftables elements are
//! written, so that no connection meets a bound address without its filter (the binds of a
//! cold start, 10,000 addresses, take seconds of the kernel's time).

use std::time::Duration;

use ipvs::{Operation, VirtualServerId};
use model::{GracefulRemovals, Scope, Step};
use tokio::time::Instant;

use super::{SyncLoop, SyncObserver, SyncReport};
use crate::filter::FilterWork;
use crate::kernel::Kernel;

/// Arrivals gathered into one priming step: long enough that a list's objects go as big
/// batches, short next to the time a big list takes.
const PRIME_PACE: Duration = Duration::from_millis(200);

/// Whether `step` adds a virtual server of an address `bound_here` says this proxy binds (or
/// one of its real servers), or, when `binding`, binds an address.
fn primes(step: &Step, bound_here: impl Fn(&VirtualServerId) -> bool, binding: bool) -> bool {
    match step {
        Step::Kernel(Operation::AddVirtualServer(vs)) => bound_here(&vs.id),
        Step::Kernel(Operation::AddRealServer(id, _)) => bound_here(id),
        Step::Bind(_) => binding,
        _ => false,
    }
}

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Until the first lists are complete: at the first arrival, adopts the kernel's state (one
    /// dump); then every [`PRIME_PACE`] adds what the arrivals want. Reports nothing (health
    /// and metrics start with the full sync).
    pub(super) async fn prime_until_lists_complete(&mut self) {
        while !self.shared.lists_complete() {
            self.shared.changed().await;
            tokio::time::sleep(PRIME_PACE).await;
            if self.shared.lists_complete() {
                break;
            }
            if !self.adopted {
                if !self.adopt().await {
                    // Nothing is added blind; the full sync tries the dump again.
                    continue;
                }
                // Counted before the lists took seconds to arrive: too old to delete a TCP
                // real server on (it drains until the next verification counts it).
                self.observed.mark_counters_stale();
                tracing::info!("adopted the kernel's state; adding what the lists want as they arrive");
                self.adopted = true;
            }
            self.prime().await;
            // The nftables table's setup (`nft`, the host's iptables looked at) is no work of
            // the lists: done while they arrive, once the Node (its pod CIDRs) is known. No
            // element is written before the full sync. A failed setup waits for its retry.
            if self.filter.is_none() && self.shared.node_listed() {
                self.start_filter(&mut SyncReport::default());
            }
        }
    }

    /// Adds what the changes since the last call want: the virtual servers, then (when the
    /// nftables sets are known) their filter elements, then, if all of that was written, the
    /// addresses.
    async fn prime(&mut self) {
        let start = Instant::now();
        let binding = self.filter.as_ref().is_some_and(|f| f.known().is_some());
        let (steps, filter_work) = {
            let mut state = self.shared.lock();
            let changes = state.model.take_changes();
            if changes.is_empty() {
                return;
            }
            let filter_work = binding.then(|| FilterWork::of(&state.model, false, &changes));
            // A scratch record: a graceful removal begun on a partial list would be wrong.
            let mut graceful = GracefulRemovals::new();
            let plan = state.model.plan(&self.observed, &Scope::Only(changes), &mut graceful, self.epoch.elapsed());
            let desired = state.model.desired();
            let bound_here = |id: &VirtualServerId| id.addr().is_some_and(|a| desired.wants_address(&a));
            let steps: Vec<Step> = plan.steps.into_iter().filter(|s| primes(s, bound_here, binding)).collect();
            (steps, filter_work)
        };
        if steps.is_empty() {
            return;
        }
        let mut report = SyncReport::default();
        self.verification.clock.tick();
        let (mut binds, steps): (Vec<Step>, Vec<Step>) = steps.into_iter().partition(|s| matches!(s, Step::Bind(_)));
        let mut planned = steps.len();
        let mut failures = self.execute(steps, &mut report).await;
        let filtered = match (filter_work, self.filter.as_mut()) {
            (Some(work), Some(filter)) => match self.verification.write_filter(|| filter.apply(work)) {
                Ok(_) => true,
                Err(e) => {
                    // The keeper rewrites its sets whole next time; the full sync binds.
                    self.filter_full = true;
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "nftables update failed while the lists arrive"
                    );
                    false
                }
            },
            _ => false,
        };
        // An address whose virtual server or filter is missing waits for the full sync.
        if filtered && failures.is_empty() && !binds.is_empty() {
            planned += binds.len();
            let addresses = self.start_binds(&mut binds);
            self.finish_addresses(addresses, &mut report, &mut failures).await;
        }
        self.verification.clock.tick();
        // Reported with the full sync that follows (metrics count every kernel write); what
        // failed here is not a failure of that sync, which plans it again.
        self.primed.plan_steps += planned;
        for ((kind, ok), n) in &report.steps {
            *self.primed.steps.entry((kind, *ok)).or_insert(0) += n;
        }
        // What failed is planned again by the full sync (everything is); logged there.
        tracing::debug!(
            steps = report.steps.values().sum::<usize>(),
            failed = failures.len(),
            "primed in {:.3?}",
            start.elapsed()
        );
    }
}
