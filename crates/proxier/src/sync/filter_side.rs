//! The nftables side of a sync: set up the keeper if it is not yet, hand it this sync's work
//! (the changes, the whole state, a round's sweep, or a rebuild after someone's edit), and keep
//! what failed for the retry, which waits longer after each failure (see `retries`).

use tokio::time::Instant;

use super::{SyncLoop, SyncObserver, SyncReport};
use crate::blocking::blocking;
use crate::filter::FilterWork;
use crate::filter_state::{filter_state, sweep_updates};
use crate::kernel::Kernel;
use model::Changes;

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// After the kernel steps of a sync (`full` or not) whose changes' filter work is
    /// `filter_work`: the nftables side's part, outside the model's lock but for short reads.
    pub(super) fn sync_filter(&mut self, full: bool, filter_work: Option<FilterWork>, report: &mut SyncReport) {
        // Until its retry is due, a failed nftables side is left as it is, and reported missing.
        let filter_due = self.filter_retry.due(Instant::now());
        self.start_filter(report);
        let edited = std::mem::take(&mut self.shared.lock().filter_edited);
        let sweep = std::mem::take(&mut self.verification.sweep);
        let filter_work = match (&self.filter, full || self.filter_full || sweep) {
            (Some(_), _) if edited => {
                tracing::warn!("the nftables table was edited by someone else; replacing it");
                Some(FilterWork::Rebuild(filter_state(&self.shared.lock().model)))
            }
            // A round's sweep, when the keeper knows what it applied: only what differs from it.
            (Some(filter), true) if !full && !self.filter_full && filter.known().is_some() => {
                let model = &self.shared.lock().model;
                filter.known().map(|applied| FilterWork::Only(sweep_updates(model, applied)))
            }
            (Some(_), true) => Some(FilterWork::of(&self.shared.lock().model, true, &Changes::new())),
            (Some(_), false) => filter_work,
            (None, _) => None,
        };
        let filter_work = match filter_work {
            Some(work) if self.filter_full && !filter_due => {
                // The edit is repaired at the retry, not forgotten.
                if matches!(work, FilterWork::Rebuild(_)) {
                    self.shared.lock().filter_edited = true;
                }
                report.filter_failed = true;
                None
            }
            work => work,
        };
        // After IPVS, outside the model's lock: `nft` runs for milliseconds per change.
        if let (Some(filter), Some(work)) = (self.filter.as_mut(), filter_work) {
            let rebuilding = matches!(work, FilterWork::Rebuild(_));
            let whole = rebuilding || matches!(work, FilterWork::Full(_));
            match self.verification.write_filter(|| filter.apply(work)) {
                Ok(n) => {
                    self.filter_full = false;
                    self.filter_retry.succeeded();
                    if whole {
                        self.shared.settle_filter(filter.settled_generation());
                    }
                    if n > 0 {
                        tracing::debug!(elements = n, "nftables sets updated");
                    }
                }
                Err(e) => {
                    // The whole state next time: what this update carried is not lost (nor the
                    // repair of someone's edit, which a rewrite of the sets may not undo).
                    self.filter_full = true;
                    self.filter_retry.failed(Instant::now());
                    if rebuilding {
                        self.shared.lock().filter_edited = true;
                    }
                    report.filter_failed = true;
                    tracing::warn!(error = &e as &dyn std::error::Error, "nftables update failed (retried)")
                }
            }
        }
    }

    /// Sets the nftables side up if it is not yet (see [`SyncLoop::with_filter_starter`]), once
    /// the retry after a failed attempt is due; until then the side is reported missing.
    pub(super) fn start_filter(&mut self, report: &mut SyncReport) {
        let (None, Some(start)) = (&self.filter, self.filter_starter.as_mut()) else { return };
        if !self.filter_retry.due(Instant::now()) {
            report.filter_failed = true;
            return;
        }
        let pod_cidrs = self.shared.lock().model.node_pod_cidrs().to_vec();
        // `nft` and `iptables` run: seconds while the kernel loads its modules.
        let started = blocking(|| start(&pod_cidrs));
        match started {
            Ok(filter) => {
                tracing::info!("nftables table set up");
                self.filter = Some(filter);
                self.filter_full = true;
            }
            Err(e) => {
                report.filter_failed = true;
                self.filter_retry.failed(Instant::now());
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "no masquerade or filtering: cannot set up the nftables table (retried)"
                );
            }
        }
    }
}
