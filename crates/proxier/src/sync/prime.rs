//! Priming: programming what the first lists want while they still arrive (issue 10's cold
//! start). At 10,000 Services the lists take seconds to arrive and decode; the kernel can be
//! adding meanwhile. Only additions: a list not yet complete cannot say what is no longer
//! wanted, so deletions, unbinds and graceful removals (a real server not yet listed looks
//! removed) wait for the full sync that follows the complete lists. And only the virtual
//! servers of addresses this proxy binds, without binding them: traffic reaches none of them
//! before the full sync binds their addresses and writes their nftables elements, so no
//! connection meets a half-made data path (a NodePort, on a node address, would: it is left to
//! the full sync too).

use std::time::Duration;

use ipvs::{Operation, VirtualServerId};
use model::{GracefulRemovals, Scope, Step};
use tokio::time::Instant;

use super::{SyncLoop, SyncObserver, SyncReport};
use crate::kernel::Kernel;

/// Arrivals gathered into one priming step: long enough that a list's objects go as big
/// batches, short next to the time a big list takes.
const PRIME_PACE: Duration = Duration::from_millis(200);

/// Whether `step` adds a virtual server of an address `bound_here` says this proxy binds (or
/// one of its real servers).
fn primes(step: &Step, bound_here: impl Fn(&VirtualServerId) -> bool) -> bool {
    match step {
        Step::Kernel(Operation::AddVirtualServer(vs)) => bound_here(&vs.id),
        Step::Kernel(Operation::AddRealServer(id, _)) => bound_here(id),
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

    /// Adds what the changes since the last call want.
    async fn prime(&mut self) {
        let start = Instant::now();
        let steps: Vec<Step> = {
            let mut state = self.shared.lock();
            let changes = state.model.take_changes();
            if changes.is_empty() {
                return;
            }
            // A scratch record: a graceful removal begun on a partial list would be wrong.
            let mut graceful = GracefulRemovals::new();
            let plan = state.model.plan(&self.observed, &Scope::Only(changes), &mut graceful, self.epoch.elapsed());
            let desired = state.model.desired();
            let bound_here = |id: &VirtualServerId| id.addr().is_some_and(|a| desired.wants_address(&a));
            plan.steps.into_iter().filter(|s| primes(s, bound_here)).collect()
        };
        if steps.is_empty() {
            return;
        }
        let mut report = SyncReport::default();
        let planned = steps.len();
        self.verification.clock.tick();
        // No address step among them (see `primes`).
        let failures = self.execute(steps, &mut report).await;
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
