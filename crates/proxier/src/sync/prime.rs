//! Priming: programming what the first lists want while they still arrive (issue 10's cold
//! start). At 10,000 Services the lists take seconds to arrive and decode; the kernel can be
//! adding meanwhile. Only additions: a list not yet complete cannot say what is no longer
//! wanted, so deletions, unbinds and graceful removals (a real server not yet listed looks
//! removed) wait for the full sync that follows the complete lists. And only the virtual
//! servers of addresses this proxy binds (a NodePort, on a node address, would take traffic at
//! once: it is left to the full sync).
//!
//! An address is bound early only once its data path is whole: every virtual server the
//! desired state puts on it programmed with real servers, and their nftables elements written
//! first. Those go early only into a table this process made (a node's first start, or after
//! a reboot): a restart's table is left for the full sync to adopt (no write when it holds
//! the desired state) or rewrite in one transaction, and its addresses are still bound anyway.
//! Binding is most of a cold start's kernel time (the kernel walks the link's addresses for
//! each one added): done while the lists arrive, the full sync that follows has little left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipvs::{Operation, VirtualServerId};
use model::{GracefulRemovals, Scope, Step};
use tokio::time::Instant;

use super::{SyncLoop, SyncObserver, SyncReport};
use crate::filter::FilterWork;
use crate::filter_state::filter_updates;
use crate::kernel::Kernel;

/// Arrivals gathered into one priming step: long enough that a list's objects go as big
/// batches, short next to the time a big list takes.
const PRIME_PACE: Duration = Duration::from_millis(200);

/// The addresses the priming binds once their data path is whole.
#[derive(Debug, Default)]
pub(super) struct EarlyBinds {
    /// Per address to bind, the virtual servers on it that the priming programmed.
    waiting: BTreeMap<IpAddr, BTreeSet<VirtualServerId>>,
    /// No more early binds: the nftables side cannot take elements early, or failed to.
    stopped: bool,
}

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
            // The nftables table's setup (`nft`, the host's iptables looked at) is no work of
            // the lists: done while they arrive, once the Node (its pod CIDRs) is known, and
            // before the additions, whose addresses wait for it. A failed setup waits for its
            // retry.
            if self.filter.is_none() && self.shared.node_listed() {
                self.start_filter(&mut SyncReport::default());
            }
            self.prime().await;
        }
        // The full sync binds what is left.
        self.early = EarlyBinds::default();
        if let Some(filter) = self.filter.as_mut() {
            filter.compact();
        }
    }

    /// Adds what the changes since the last call want, and binds the addresses whose data path
    /// that completes.
    async fn prime(&mut self) {
        let start = Instant::now();
        let (steps, changed) = {
            let mut state = self.shared.lock();
            let changes = state.model.take_changes();
            // With no change, addresses waiting for the nftables side may still be due (it
            // was just set up).
            if changes.is_empty() && self.early.waiting.is_empty() {
                return;
            }
            let changed: Vec<VirtualServerId> = changes.virtual_servers.iter().copied().collect();
            // A scratch record: a graceful removal begun on a partial list would be wrong.
            let mut graceful = GracefulRemovals::new();
            let plan = state.model.plan(&self.observed, &Scope::Only(changes), &mut graceful, self.epoch.elapsed());
            let desired = state.model.desired();
            let bound_here = |id: &VirtualServerId| id.addr().is_some_and(|a| desired.wants_address(&a));
            let steps: Vec<Step> = plan.steps.into_iter().filter(|s| primes(s, bound_here)).collect();
            (steps, changed)
        };
        let mut report = SyncReport::default();
        let mut failures = 0;
        if !steps.is_empty() {
            let mut address_time = Duration::ZERO;
            self.primed.plan_steps += steps.len();
            self.verification.clock.tick();
            failures += self.execute(steps, &mut report, &mut address_time).await.len();
            self.verification.clock.tick();
        }
        failures += self.bind_early(changed, &mut report).await;
        // Reported with the full sync that follows (metrics count every kernel write); what
        // failed here is not a failure of that sync, which plans it again (logged there).
        for ((kind, ok), n) in &report.steps {
            *self.primed.steps.entry((kind, *ok)).or_insert(0) += n;
        }
        tracing::debug!(
            steps = report.steps.values().sum::<usize>(),
            failed = failures,
            "primed in {:.3?}",
            start.elapsed()
        );
    }

    /// Notes the bound virtual servers among `changed` as waiting for their address; then binds
    /// each address whose every desired virtual server is programmed with real servers, after
    /// writing their nftables elements (and updating those of addresses bound already). Returns
    /// how many steps failed.
    async fn bind_early(&mut self, changed: Vec<VirtualServerId>, report: &mut SyncReport) -> usize {
        let filter_ready = match (&self.filter, &self.filter_starter) {
            (Some(filter), _) => filter.writes_early(),
            (None, None) => true,
            // Not set up yet: the addresses wait for it.
            (None, Some(_)) => false,
        };
        if self.filter.as_ref().is_some_and(|f| !f.writes_early()) {
            self.early = EarlyBinds { stopped: true, ..EarlyBinds::default() };
        }
        if self.early.stopped {
            return 0;
        }
        let (ready, work) = {
            let state = self.shared.lock();
            let desired = state.model.desired();
            let mut also = Vec::new();
            for id in changed {
                let Some(addr) = id.addr() else { continue };
                if !desired.virtual_server(&id).is_some_and(|d| d.bind) {
                    continue;
                }
                if self.observed.is_bound(&addr) {
                    also.push(id);
                } else {
                    self.early.waiting.entry(addr).or_default().insert(id);
                }
            }
            if !filter_ready {
                return 0;
            }
            let whole = |id: &VirtualServerId| {
                desired.virtual_server(id).is_some_and(|d| !d.real_servers.is_empty())
                    && self.observed.virtual_server(id).is_some_and(|o| !o.real_servers.is_empty())
            };
            let ready: Vec<IpAddr> = self
                .early
                .waiting
                .iter()
                .filter(|(addr, ids)| ids.len() == desired.binding(addr) as usize && ids.iter().all(whole))
                .map(|(addr, _)| *addr)
                .collect();
            let ids: Vec<&VirtualServerId> =
                ready.iter().filter_map(|a| self.early.waiting.get(a)).flatten().chain(&also).collect();
            let work =
                (self.filter.is_some() && !ids.is_empty()).then(|| FilterWork::Only(filter_updates(&state.model, ids)));
            (ready, work)
        };
        if let (Some(filter), Some(work)) = (self.filter.as_mut(), work) {
            if let Err(e) = self.verification.write_filter(|| filter.apply(work)) {
                // The full sync writes the sets whole and binds the rest.
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "nftables elements not written early (the full sync writes them)"
                );
                self.filter_full = true;
                self.early = EarlyBinds { stopped: true, ..EarlyBinds::default() };
                return 1;
            }
            // What the table holds is known: the full sync writes only the difference.
            self.filter_full = false;
        }
        if ready.is_empty() {
            return 0;
        }
        for addr in &ready {
            self.early.waiting.remove(addr);
        }
        self.primed.plan_steps += ready.len();
        self.verification.clock.tick();
        let results = self.kernel.bind(&ready).await;
        self.verification.clock.tick();
        let mut failures = Vec::new();
        self.record_addresses(&ready, results, Step::Bind, report, &mut failures);
        failures.len()
    }
}
