//! The sync loop: keeps the kernel in step with the model, incrementally.
//!
//! Each sync plans only what changed since the last one against [`Observed`], the state the
//! daemon last applied (kept current from the batch results), so one EndpointSlice change costs
//! work proportional to its Service. Drift is found by the verification (`verification`,
//! [`crate::verify`]), a slice at a time, and planned like a change; without one, a full
//! reconcile against a fresh kernel dump runs every `syncPeriod`.

mod execute;
mod filter_side;
mod prime;
mod read_back;
mod refusals;
mod report;
mod retries;
#[cfg(test)]
mod tests;
mod verification;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ipvs::{Table, VirtualServerId};
use k8s_openapi::jiff::Timestamp;
use model::{Changes, GracefulRemovals, Model, Observed, Scope, Step, operation_target};
use netfilter::StaleFlows;

pub use report::SyncReport;

use crate::filter::{Filter, FilterStarter, FilterWork};
use crate::kernel::Kernel;
use crate::ownership::OwnershipRecord;
use crate::schedule::Schedule;
use crate::shared::Shared;
use crate::verify::{KernelReader, VerifySettings};
use verification::Verification;

/// Steps per batch call: a cold start's 100,000 operations go as a few batches, so that the
/// encoded requests and their results never all sit in memory at once.
const MAX_BATCH: usize = 8192;

/// The virtual servers whose graceful removals a verification progresses are planned this many
/// a sync. Under churn they are hundreds: planned, filtered and written in one sync they held a
/// change back for tens of milliseconds; a slice at a time, with the changes' syncs in between,
/// a change waits for one slice at most.
const GRACEFUL_SLICE: usize = 32;

/// An incremental sync at least this long logs where its time went.
const SLOW_SYNC: Duration = Duration::from_millis(20);

/// At most this many failures are logged one by one per sync; the rest are counted.
const LOGGED_FAILURES: usize = 20;

/// The sync periods (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// A full reconcile at least this often, when the loop has no verifier.
    pub sync_period: Duration,
    /// No sync sooner than this after the previous one began.
    pub min_sync_period: Duration,
}

/// Told about every sync, with the model as it is after the sync (locked: be brief).
pub trait SyncObserver: Send {
    /// One sync finished.
    fn synced(&mut self, report: &SyncReport, model: &Model);

    /// The first lists are complete, what their decoding allocated is freed, and the full
    /// sync, the start's largest allocations, comes next: the moment to hand free memory back
    /// to the kernel, if the process's allocator keeps it. Once, before any `synced`.
    fn lists_complete(&mut self) {}
}

/// The sync loop over a [`Kernel`].
pub struct SyncLoop<K, O> {
    kernel: K,
    shared: Arc<Shared>,
    observer: O,
    settings: SyncSettings,
    observed: Observed,
    graceful: GracefulRemovals,
    retry: Changes,
    epoch: Instant,
    real_servers: usize,
    /// The nftables side, if the daemon runs one.
    filter: Option<Box<dyn Filter>>,
    /// Sets the nftables side up; tried on every sync until it succeeds.
    filter_starter: Option<FilterStarter>,
    /// Whether the next filter work must be the whole state (new keeper, or a failed update).
    filter_full: bool,
    /// When the nftables side, having failed, is tried again.
    filter_retry: retries::FilterRetry,
    /// Whether `observed` was adopted from a dump and kept current since (by the priming), so
    /// that the first full sync needs no dump of its own.
    adopted: bool,
    /// The steps the priming ran, reported with the first full sync.
    primed: SyncReport,
    /// Where the virtual servers this proxy made on node addresses are recorded across restarts.
    ownership: Option<OwnershipRecord>,
    /// Whether the record must be written after this sync.
    ownership_changed: bool,
    /// Conntrack entries this sync's operations made stale, forgotten once the sync applied.
    stale: BTreeSet<StaleFlows>,
    /// The verification read beside the loop, if any (else a full reconcile every period).
    verification: Verification,
    /// Virtual servers a kernel refusal showed to differ from the record, read back by the
    /// next sync (see `refusals`).
    read_back: BTreeSet<VirtualServerId>,
}

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Replaces what the loop believes the kernel holds with a whole-table dump; false (and the
    /// last applied state kept) if the dump failed.
    async fn adopt(&mut self) -> bool {
        match self.kernel.observe().await {
            Ok((mut table, bound)) => {
                // Built while the dump is drained, and with the old record dropped first: at
                // 100,000 real servers each copy is tens of MiB.
                let ours: Vec<VirtualServerId> = self.observed.ours().copied().collect();
                self.observed = Observed::new();
                let mut observed = Observed::from_kernel(&Table::default(), bound);
                observed.claim(ours);
                for (vs, dests) in table.services.drain(..) {
                    observed.replace_virtual_server(&vs, &dests);
                }
                self.observed = observed;
                true
            }
            Err(e) => {
                tracing::warn!("planning against the last applied state: {e}");
                false
            }
        }
    }

    /// A loop writing through `kernel` what `shared`'s model wants.
    pub fn new(kernel: K, shared: Arc<Shared>, observer: O, settings: SyncSettings) -> SyncLoop<K, O> {
        SyncLoop {
            kernel,
            shared,
            observer,
            settings,
            observed: Observed::new(),
            graceful: GracefulRemovals::new(),
            retry: Changes::new(),
            epoch: Instant::now(),
            real_servers: 0,
            filter: None,
            filter_starter: None,
            filter_full: false,
            filter_retry: retries::FilterRetry::default(),
            adopted: false,
            primed: SyncReport::default(),
            ownership: None,
            ownership_changed: false,
            stale: BTreeSet::new(),
            verification: Verification::default(),
            read_back: BTreeSet::new(),
        }
    }

    /// Verifies the kernel's state with `reader`, spread over time beside the loop (see
    /// [`KernelReader`]), in place of a whole-table dump and full reconcile every `syncPeriod`:
    /// after the adopting sync, what the reads find to differ is planned like a change.
    #[must_use]
    pub fn with_verifier<R: KernelReader>(mut self, reader: R, settings: VerifySettings) -> SyncLoop<K, O> {
        self.verification = Verification::new(reader, settings);
        self
    }

    /// Like [`SyncLoop::with_filter`], with the keeper made by `start`, which is tried before
    /// every sync's filter work until it succeeds: until then each sync fails (the data path
    /// misses masquerade and filtering), which health and metrics report.
    #[must_use]
    pub fn with_filter_starter(mut self, start: FilterStarter) -> SyncLoop<K, O> {
        self.filter_starter = Some(start);
        self
    }

    /// Keeps `record` of the virtual servers this proxy makes on addresses it does not bind
    /// (node addresses), and starts from what it holds: after a restart those are this proxy's
    /// to delete when no longer desired, and nothing else on a node address is. An unreadable
    /// record is logged and treated as empty (entries are then left, never wrongly deleted).
    #[must_use]
    pub fn with_ownership_record(mut self, record: OwnershipRecord) -> SyncLoop<K, O> {
        match record.read() {
            Ok(ids) => {
                tracing::info!(recorded = ids.len(), path = %record.path().display(), "ownership record read");
                self.observed.claim(ids);
            }
            Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "ownership record ignored"),
        }
        self.ownership = Some(record);
        self
    }

    /// Also keeps `filter` (masquerade and filtering) in step: after each sync it gets the
    /// changed virtual servers' filters, and on full reconciles all of them.
    #[must_use]
    pub fn with_filter(mut self, filter: Box<dyn Filter>) -> SyncLoop<K, O> {
        self.filter = Some(filter);
        self
    }

    /// Runs forever: adopts the kernel's state at the first object and, while the first lists
    /// arrive, adds what they want (nothing is deleted, unbound or drained before every list is
    /// complete: see `prime`); then a full sync (so a restart with an unchanged cluster
    /// writes nothing), then syncs on changes, on what the verification finds and every sync
    /// period (a full reconcile when there is no verification).
    pub async fn run(mut self) {
        self.prime_until_lists_complete().await;
        self.observer.lists_complete();
        tracing::info!("first lists complete; reconciling everything");
        // Due at once and full: the first sync adopts the kernel's state and reads the node's
        // addresses before anything is planned.
        let now = Instant::now();
        let mut schedule = Schedule { min_sync_period: self.settings.min_sync_period, last_start: now, next_full: now };
        // A change fed while waiting for the lists is in the model already: the full sync takes it.
        let mut dirty = false;
        let mut readings = None;
        loop {
            // The verification's remaining slices of graceful removals go at once, one a sync.
            let next = schedule.next(dirty || !self.verification.graceful_due.is_empty(), self.retry_at(&schedule));
            tokio::select! {
                _ = self.shared.changed(), if !dirty => {
                    dirty = true;
                    continue;
                }
                reading = next_reading(&mut readings) => {
                    match reading {
                        Some(reading) => {
                            let filter = &self.filter;
                            let applied = |set: &str| filter.as_ref().and_then(|f| f.set_digest(set));
                            dirty |= self.verification.take_in(&mut self.observed, reading, applied);
                        }
                        None => {
                            // Not expected (the task only ends with the loop): fall back to
                            // full reconciles rather than verify nothing.
                            tracing::error!("the verification task ended; full reconciles take its place");
                            readings = None;
                            schedule.next_full = Instant::now();
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next.at) => {}
            }
            schedule.last_start = Instant::now();
            dirty = false;
            self.sync(next.full).await;
            if next.full && readings.is_none() {
                readings = self.verification.spawn(&self.observed);
            }
            // With the verification running, the adopting sync is the only whole-table one.
            let period = if readings.is_some() { Duration::MAX } else { self.settings.sync_period };
            schedule.finished(next.full, Instant::now(), period);
        }
    }

    /// One sync: full (fresh dump, everything planned) or incremental (only what changed).
    pub async fn sync(&mut self, full: bool) -> SyncReport {
        let start = Instant::now();
        let mut report = SyncReport::default();
        // A whole-table dump, unless the priming made one since (it then kept it current).
        if full && !std::mem::take(&mut self.adopted) && !self.adopt().await {
            report.read_failures += 1;
        }
        // A failed dump still plans everything, against the last applied state: that cannot
        // repair drift but still applies every change.
        report.full = full;
        let verifying = !full && std::mem::take(&mut self.verification.due);
        if verifying {
            self.read_unknown(&mut report).await;
        }
        // Counted by the verification just now: planned a slice a sync (below), deleted then if
        // idle, and stale after that sync.
        let counted = if verifying { std::mem::take(&mut self.verification.counted) } else { Vec::new() };
        let mut planned_counts = Vec::new();
        report.full |= verifying;
        report.verification = verifying;
        report.read_failures += std::mem::take(&mut self.verification.read_failures);

        // Before planning: what the last sync's refusals showed to differ and what a list did
        // not show (seldom any).
        let read_back = self.read_back(&mut report).await;

        let now = self.epoch.elapsed();
        let before_lock = Instant::now();
        let (plan, pending_since, filter_work, lock_wait) = {
            let mut state = self.shared.lock();
            let lock_wait = before_lock.elapsed();
            let mut changes = state.model.take_changes();
            // A retry or drift found is no change waiting: with only those to plan, this sync
            // takes a slice too (else a step that keeps failing would hold the slices back and,
            // with slices due, be retried without the retry delay).
            let change_waiting = !changes.is_empty() || !state.unbound.is_empty();
            self.ownership_changed |= read_back::claim_read_back(&mut self.observed, &read_back, state.model.desired());
            changes.virtual_servers.extend(read_back);
            changes.merge(std::mem::take(&mut self.retry));
            changes.merge(std::mem::take(&mut self.verification.found));
            // Graceful removals progress at each verification (fresh counts, or time up), not in
            // every sync: under churn hundreds may be pending, and a change must not plan them all.
            // A slice in the verification and in each sync after it with no change waiting, on
            // the counts the verification read (stale once planned).
            let due = &mut self.verification.graceful_due;
            if full {
                due.clear();
            } else {
                if verifying {
                    due.extend(self.graceful.iter().map(|(vs, _, _)| *vs));
                    due.extend(counted);
                }
                if verifying || !change_waiting {
                    let slice: Vec<VirtualServerId> = due.iter().take(GRACEFUL_SLICE).copied().collect();
                    for vs in &slice {
                        due.remove(vs);
                    }
                    changes.virtual_servers.extend(slice.iter().copied());
                    planned_counts = slice;
                    report.graceful_left = due.len();
                }
            }
            // Removed from the dummy link behind the proxy's back (or by its own unbind, then
            // no longer wanted): no longer bound, and planned again.
            for addr in std::mem::take(&mut state.unbound) {
                self.observed.set_bound(addr, false);
                changes.addresses.insert(addr);
            }
            // A full sync's filter state covers every Service: built after the kernel steps,
            // once the plan is gone, so that the two never sit in memory together.
            let wants_filter = self.filter.is_some() || self.filter_starter.is_some();
            let filter_work = (wants_filter && !full).then(|| FilterWork::of(&state.model, false, &changes));
            let scope = if full { Scope::All } else { Scope::Only(changes) };
            let plan = state.model.plan(&self.observed, &scope, &mut self.graceful, now);
            if full {
                // What this proxy manages from now on (adopted entries included) is its own.
                self.ownership_changed |= self.observed.claim_desired(state.model.desired()) > 0;
            }
            let pending = std::mem::take(&mut state.pending);
            report.touched_services = pending.touched;
            report.trigger_times = pending.trigger_times;
            report.service_changes = pending.service_changes;
            report.endpoint_changes = pending.endpoint_changes;
            (plan, state.health.pending_since.take(), filter_work, lock_wait)
        };
        report.plan_steps = plan.len();
        report.queued = pending_since.map(|t| start.into_std().saturating_duration_since(t)).unwrap_or_default();
        if full {
            let primed = std::mem::take(&mut self.primed);
            report.plan_steps += primed.plan_steps;
            for (key, n) in primed.steps {
                *report.steps.entry(key).or_insert(0) += n;
            }
        }
        let planned = start.elapsed();

        // Odd while writing: a verification read that begins now cannot vouch for these writes.
        self.verification.clock.tick();
        let mut steps = plan.steps;
        let addresses = self.start_binds(&mut steps);
        let mut failures = self.execute(steps, &mut report).await;
        // The connection counts this sync planned with are from now on a guess: a TCP real
        // server removed later is drained until the next read counts it idle.
        if full {
            self.observed.mark_counters_stale();
        } else {
            self.observed.mark_counters_stale_of(&planned_counts);
        }
        // At once: a restart must know the virtual servers just made on node addresses. The
        // addresses being bound are not node addresses (a failed bind rewrites the record).
        self.write_ownership(addresses.binding());
        let executed = start.elapsed();
        // While the kernel still binds (a cold start's 10,000 addresses take seconds).
        self.sync_filter(full, filter_work, &mut report);
        let filtered = start.elapsed();
        let address_time = self.finish_addresses(addresses, &mut report, &mut failures).await;
        self.verification.clock.tick();
        self.write_ownership(&[]);

        // The verification counts the connections of real servers being removed gracefully.
        self.verification.set_pending(self.graceful.iter().map(|(vs, _, _)| *vs));
        self.repair_filter_sets(&mut report);

        // Last: a flow whose packets passed between the IPVS change and the nftables one got an
        // entry without the masquerade that was still missing; it is as stale as the older ones.
        self.forget_stale_flows(&mut report).await;

        report.duration = start.elapsed();
        if full || report.duration >= SLOW_SYNC {
            // Where a full sync's time goes (a cold start is one), or a slow one's: rare
            // enough for info level.
            tracing::info!(
                "{} sync phases: observe and plan {:.3?} (of which waiting for the model {:.3?}), IPVS {:.3?}, nftables {:.3?}, addresses {:.3?} (beside both)",
                if full { "full" } else { "slow" },
                planned,
                lock_wait,
                executed - planned,
                filtered - executed,
                address_time,
            );
        }
        let mut state = self.shared.lock();
        for (step, err) in failures.iter().take(LOGGED_FAILURES) {
            let service = match step {
                Step::Kernel(op) => {
                    state.model.desired().virtual_server(&operation_target(op)).map(|d| d.origin.to_string())
                }
                _ => None,
            };
            tracing::warn!(service = service.as_deref().unwrap_or("-"), "failed (retrying): {err}");
        }
        if failures.len() > LOGGED_FAILURES {
            tracing::warn!("{} more steps failed", failures.len() - LOGGED_FAILURES);
        }
        report.virtual_servers = state.model.desired().len();
        // Counting real servers walks the whole desired state: done on full syncs only, so that
        // an incremental sync stays proportional to its change.
        if full {
            self.real_servers = state.model.desired().real_server_count();
        }
        report.real_servers = self.real_servers;
        state.health.sync_failing = !report.succeeded();
        if report.succeeded() {
            state.health.last_synced = Some(Timestamp::now());
        } else if let Some(since) = pending_since {
            // Still not applied: the oldest unapplied change stays what health measures.
            let newer = state.health.pending_since.unwrap_or(since);
            state.health.pending_since = Some(since.min(newer));
        }
        self.observer.synced(&report, &state.model);
        drop(state);
        tracing::info!("{report}");
        report
    }

    /// A verification sync's own read, right before planning: the real servers of the virtual
    /// servers someone else made (seldom any), which the plan must know before it touches them.
    async fn read_unknown(&mut self, report: &mut SyncReport) {
        let servers = std::mem::take(&mut self.verification.unknown);
        if servers.is_empty() {
            return;
        }
        let ids: Vec<VirtualServerId> = servers.iter().map(|s| s.id).collect();
        match self.kernel.real_servers(&ids).await {
            Ok(all) => {
                for (server, dests) in servers.iter().zip(all) {
                    self.observed.verify_real_servers(server, &dests, true);
                }
                self.verification.found.virtual_servers.extend(ids.iter().copied());
                self.verification.counted.extend(ids);
            }
            Err(e) => {
                report.read_failures += 1;
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot read someone else's virtual servers (retried)"
                );
                self.verification.unknown = servers;
            }
        }
    }

    /// Compares the nftables sets whose digest the verification found to differ with what the
    /// kernel holds, element by element, and repairs them (seldom: only drift that no
    /// notification reported makes digests differ).
    fn repair_filter_sets(&mut self, report: &mut SyncReport) {
        let sets = std::mem::take(&mut self.verification.filter_repairs);
        let Some(filter) = self.filter.as_mut() else { return };
        for set in sets {
            match self.verification.write_filter(|| filter.repair_set(&set)) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(set, elements = n, "nftables set differed from what was written; repaired"),
                Err(e) => {
                    report.filter_failed = true;
                    tracing::warn!(set, error = &e as &dyn std::error::Error, "nftables set check failed (retried)");
                    self.verification.filter_repairs.push(set);
                }
            }
        }
    }

    /// Deletes the conntrack entries this sync's operations made stale. A failure is logged and
    /// counted, not retried: the entries it would delete end when their clients pause.
    async fn forget_stale_flows(&mut self, report: &mut SyncReport) {
        if self.stale.is_empty() {
            return;
        }
        let stale: Vec<StaleFlows> = std::mem::take(&mut self.stale).into_iter().collect();
        let results = self.kernel.forget(&stale).await;
        for (flows, result) in stale.iter().zip(results) {
            match result {
                Ok(n) => {
                    report.flows_forgotten += n;
                    tracing::debug!(entries = n, "forgot the {flows}");
                }
                Err(e) => {
                    report.forget_failures += 1;
                    tracing::warn!(error = &e as &dyn std::error::Error, "stale conntrack entries left");
                }
            }
        }
    }

    /// Writes the ownership record when this sync made, deleted or claimed a virtual server (or
    /// a bind failed): this proxy's virtual servers on addresses not bound, counting `binding`
    /// (sorted: binds under way) as bound.
    fn write_ownership(&mut self, binding: &[IpAddr]) {
        let Some(record) = self.ownership.as_ref().filter(|_| std::mem::take(&mut self.ownership_changed)) else {
            return;
        };
        let unbound = self
            .observed
            .ours_unbound()
            .filter(|id| id.addr().is_none_or(|addr| binding.binary_search(&addr).is_err()));
        if let Err(e) = record.write(unbound) {
            // Next time, then; meanwhile a restart would leave (not wrongly delete) NodePorts.
            self.ownership_changed = true;
            tracing::warn!(error = &e as &dyn std::error::Error, "cannot write the ownership record");
        }
    }

    /// The state the loop believes the kernel holds (for tests and debugging).
    pub fn observed(&self) -> &Observed {
        &self.observed
    }
}

/// The next verification read; never, without a verification task.
async fn next_reading(
    readings: &mut Option<tokio::sync::mpsc::Receiver<crate::verify::Reading>>,
) -> Option<crate::verify::Reading> {
    match readings {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
