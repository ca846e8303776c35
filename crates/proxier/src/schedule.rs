//! When the next sync runs: as soon as a change is pending but no sooner than `minSyncPeriod`
//! after the previous sync began (bursts coalesce into one sync), and a full reconcile at least
//! every `syncPeriod`. Pure, so the rules are tested without clocks.

use std::time::Duration;

use tokio::time::Instant;

/// Failed operations are retried this long after the sync that failed them (or after
/// `minSyncPeriod`, if longer), not at the next full reconcile only.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The next sync: when, and whether it is a full reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextSync {
    pub at: Instant,
    pub full: bool,
}

/// The sync timing rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub min_sync_period: Duration,
    /// When the last sync began.
    pub last_start: Instant,
    /// When the next full reconcile is due.
    pub next_full: Instant,
}

impl Schedule {
    /// The next sync, given whether a change is pending (`dirty`) and when failed operations
    /// are due for a retry (never sooner than `minSyncPeriod` after the last sync began).
    pub fn next(&self, dirty: bool, retry_at: Option<Instant>) -> NextSync {
        let mut at = self.next_full;
        let min = later(self.last_start, self.min_sync_period);
        if dirty {
            at = at.min(min);
        }
        if let Some(retry) = retry_at {
            at = at.min(retry.max(min));
        }
        NextSync { at, full: at >= self.next_full }
    }

    /// `delay` after the last sync began.
    pub fn after_last_start(&self, delay: Duration) -> Instant {
        later(self.last_start, delay)
    }

    /// Records the end of a sync. After a full one the next is due `sync_period` after its
    /// end, not its start: a full reconcile that took longer than `sync_period` (a cold start
    /// at 10,000 Services) must not be followed at once by another whole-table dump, which
    /// would hold back every change meanwhile.
    pub fn finished(&mut self, full: bool, end: Instant, sync_period: Duration) {
        if full {
            self.next_full = later(end, sync_period);
        }
    }
}

/// `at + period`, or a time past any sync when the sum is beyond the clock's range (a period
/// of centuries means "never"), instead of a panic.
fn later(at: Instant, period: Duration) -> Instant {
    at.checked_add(period).unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_and_reconciles() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (min sync period, ms since the last sync began → next full, dirty, retry, expected ms, full)
        let cases: &[(u64, u64, bool, bool, u64, bool)] = &[
            // Nothing pending: wait for the full reconcile.
            (0, 30_000, false, false, 30_000, true),
            // A change with minSyncPeriod 0: at once.
            (0, 30_000, true, false, 0, false),
            // A change within minSyncPeriod: waits for it (everything arriving meanwhile joins).
            (1_000, 30_000, true, false, 1_000, false),
            // A change when the full reconcile comes first anyway: the full reconcile takes it.
            (1_000, 500, true, false, 500, true),
            // A retry waits at least the retry delay...
            (0, 30_000, false, true, 1_000, false),
            // ...or minSyncPeriod when longer.
            (5_000, 30_000, false, true, 5_000, false),
            // A change and a retry: the earlier rule wins.
            (0, 30_000, true, true, 0, false),
            // The due time being the full reconcile's makes the sync full.
            (1_000, 1_000, true, false, 1_000, true),
        ];
        for (i, (min, full_in, dirty, retry, want, want_full)) in cases.iter().enumerate() {
            let s = Schedule { min_sync_period: ms(*min), last_start: t0, next_full: t0 + ms(*full_in) };
            let next = s.next(*dirty, retry.then(|| s.after_last_start(RETRY_DELAY)));
            assert_eq!(next, NextSync { at: t0 + ms(*want), full: *want_full }, "case {i}");
        }
    }

    #[test]
    fn the_sync_period_counts_from_the_end_of_a_full_reconcile() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let period = ms(30_000);
        // (full, sync duration ms, expected next full reconcile in ms after t0)
        let cases: &[(bool, u64, u64)] = &[
            // A quick full reconcile: syncPeriod later.
            (true, 100, 30_100),
            // One longer than syncPeriod (a cold start): still a whole period after its end,
            // not due at once.
            (true, 177_000, 207_000),
            // An incremental sync leaves the due time alone.
            (false, 100, 30_000),
        ];
        for (i, (full, took, want)) in cases.iter().enumerate() {
            let mut s = Schedule { min_sync_period: ms(0), last_start: t0, next_full: t0 + period };
            s.finished(*full, t0 + ms(*took), period);
            assert_eq!(s.next_full, t0 + ms(*want), "case {i}");
            // With nothing pending, the next sync is that full reconcile.
            assert_eq!(s.next(false, None), NextSync { at: t0 + ms(*want), full: true }, "case {i}");
        }
    }
}
