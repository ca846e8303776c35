//! What waits for a retry, and when: failed steps the retry delay after the sync that failed
//! them; the nftables side soon at first, then less and less often. Each of its attempts runs
//! `nft` or rewrites every set: a table the kernel keeps refusing must not cost a CPU, nor an
//! attempt per change under churn. Meanwhile every sync reports the nftables side failed, so
//! health stays false.

use std::time::Duration;

use tokio::time::Instant;

use super::SyncLoop;
use crate::kernel::Kernel;
use crate::schedule::{RETRY_DELAY, Schedule};
use crate::sync::SyncObserver;

/// The longest wait between two attempts.
pub(crate) const FILTER_RETRY_MAX: Duration = Duration::from_secs(30);

/// Consecutive failures of the nftables side and when it may be tried next.
#[derive(Debug, Default)]
pub(crate) struct FilterRetry {
    failures: u32,
    not_before: Option<Instant>,
}

impl FilterRetry {
    /// Whether an attempt may be made at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// When the next attempt may be made, after a failure.
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// An attempt at `now` failed: the next waits twice as long as the last, up to the maximum.
    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay(self.failures));
    }

    /// An attempt succeeded: the next failure is retried soon again.
    pub fn succeeded(&mut self) {
        *self = FilterRetry::default();
    }
}

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Whether failed steps, or the nftables side, wait for a retry.
    pub fn retry_pending(&self) -> bool {
        !self.retry.is_empty() || self.filter_pending()
    }

    /// Whether the nftables side is missing or behind.
    fn filter_pending(&self) -> bool {
        self.filter_full || (self.filter.is_none() && self.filter_starter.is_some())
    }

    /// When the next retry is due: failed steps the retry delay after the last sync began, the
    /// nftables side when its own retry is ([`FilterRetry`]); `None` when nothing waits.
    pub(super) fn retry_at(&self, schedule: &Schedule) -> Option<Instant> {
        let soon = schedule.after_last_start(RETRY_DELAY);
        let steps = (!self.retry.is_empty()).then_some(soon);
        let filter = self.filter_pending().then(|| self.filter_retry.not_before().map_or(soon, |t| t.max(soon)));
        steps.into_iter().chain(filter).min()
    }
}

/// The wait after `failures` in a row: the retry delay, doubled each time, at most the maximum.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(8);
    RETRY_DELAY.saturating_mul(1 << doublings).min(FILTER_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_half_a_minute_and_a_success_resets_it() {
        let waits: Vec<u64> = (1..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        let now = Instant::now();
        let mut retry = FilterRetry::default();
        assert!(retry.due(now));
        retry.failed(now);
        retry.failed(now);
        assert!(!retry.due(now + Duration::from_secs(1)) && retry.due(now + Duration::from_secs(2)));
        retry.succeeded();
        assert!(retry.due(now) && retry.not_before().is_none());
    }
}
