//! What one sync did, for logs, metrics and health-check node ports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use ipvs::Operation;
use k8s_openapi::jiff::Timestamp;
use model::{ServiceKey, Step};

/// Up to this many changed Services are named in a sync's log line.
const NAMED_SERVICES: usize = 5;

/// The kind of a step, as the `kind` label of the kernel operation metrics names it.
pub(crate) fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::Bind(_) => "bind_address",
        Step::Unbind(_) => "unbind_address",
        Step::Kernel(Operation::AddVirtualServer(_)) => "add_virtual_server",
        Step::Kernel(Operation::UpdateVirtualServer(_)) => "update_virtual_server",
        Step::Kernel(Operation::DeleteVirtualServer(_)) => "delete_virtual_server",
        Step::Kernel(Operation::AddRealServer(..)) => "add_real_server",
        Step::Kernel(Operation::UpdateRealServer(..)) => "update_real_server",
        Step::Kernel(Operation::DeleteRealServer(..)) => "delete_real_server",
    }
}

/// One sync's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// A full reconcile against a fresh kernel dump, or a periodic verification (else
    /// incremental): one every `syncPeriod`.
    pub full: bool,
    /// Of those, a periodic verification (no whole-table dump: see `with_verifier`).
    pub verification: bool,
    /// Steps planned.
    pub plan_steps: usize,
    /// Steps run, by kind (`bind`, `add virtual server`, ...) and success.
    pub steps: BTreeMap<(&'static str, bool), usize>,
    /// Steps that failed (they are retried).
    pub failed: usize,
    /// Virtual servers whose graceful removals a verification left for the next syncs (a slice
    /// is planned per sync).
    pub graceful_left: usize,
    /// Kernel reads that failed (the dump, the host's addresses).
    pub read_failures: usize,
    /// Whether the nftables side could not be set up or updated: masquerade or filtering is
    /// then missing or stale, which makes the sync a failed one (retried, and unhealthy).
    pub filter_failed: bool,
    /// Conntrack entries of stale connectionless flows deleted.
    pub flows_forgotten: usize,
    /// Groups of stale conntrack entries that could not be deleted (logged, not retried).
    pub forget_failures: usize,
    /// How long the oldest change this sync applies waited for it to begin (zero when it
    /// applies none): with `duration`, the change's time through the proxy.
    pub queued: Duration,
    /// Wall time from the sync's start to its end.
    pub duration: Duration,
    /// Desired virtual servers after the sync.
    pub virtual_servers: usize,
    /// Desired real servers as of the last full sync.
    pub real_servers: usize,
    /// Service changes fed since the previous sync.
    pub service_changes: u64,
    /// EndpointSlice changes fed since the previous sync.
    pub endpoint_changes: u64,
    /// Trigger times of the EndpointSlice changes this sync programmed.
    pub trigger_times: Vec<Timestamp>,
    /// Services some change touched since the previous sync.
    pub touched_services: BTreeSet<ServiceKey>,
}

impl SyncReport {
    /// Whether nothing failed, reads included.
    pub fn succeeded(&self) -> bool {
        self.failed == 0 && self.read_failures == 0 && !self.filter_failed
    }

    pub(crate) fn count(&mut self, step: &Step, ok: bool) {
        *self.steps.entry((step_kind(step), ok)).or_insert(0) += 1;
        if !ok {
            self.failed += 1;
        }
    }
}

impl fmt::Display for SyncReport {
    /// One line: `incremental sync: 3 steps (add_virtual_server=1 add_real_server=2), 0 failed, 1 services
    /// changed (demo/web), queued 0.8ms, in 1.2ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (self.full, self.verification) {
            (true, true) => "verification",
            (true, false) => "full",
            (false, _) => "incremental",
        };
        write!(f, "{kind} sync: {} steps", self.plan_steps)?;
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for ((kind, _), n) in &self.steps {
            *by_kind.entry(kind).or_insert(0) += n;
        }
        if !by_kind.is_empty() {
            let parts: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
            write!(f, " ({})", parts.join(" "))?;
        }
        write!(f, ", {} failed", self.failed + self.read_failures)?;
        if self.graceful_left > 0 {
            write!(f, ", graceful removals of {} virtual servers left for the next syncs", self.graceful_left)?;
        }
        write!(f, ", {} services changed", self.touched_services.len())?;
        // Name the Services of a small sync: the usual case, and what an operator looks for.
        if (1..=NAMED_SERVICES).contains(&self.touched_services.len()) {
            let names: Vec<String> = self.touched_services.iter().map(ToString::to_string).collect();
            write!(f, " ({})", names.join(" "))?;
        }
        if self.flows_forgotten > 0 {
            write!(f, ", {} stale conntrack entries deleted", self.flows_forgotten)?;
        }
        if !self.queued.is_zero() {
            write!(f, ", queued {:.3?}", self.queued)?;
        }
        write!(f, ", in {:.3?}", self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn one_line_summary() {
        let addr: IpAddr = "10.96.0.1".parse().unwrap();
        let mut small = SyncReport {
            plan_steps: 2,
            queued: Duration::from_micros(1_500),
            duration: Duration::from_millis(3),
            ..Default::default()
        };
        small.count(&Step::Bind(addr), true);
        small.count(&Step::Unbind(addr), false);
        small.touched_services.insert(ServiceKey::new("demo", "web"));
        let mut big = SyncReport { full: true, read_failures: 1, ..Default::default() };
        let sliced =
            SyncReport { full: true, verification: true, plan_steps: 40, graceful_left: 8, ..Default::default() };
        for i in 0..6 {
            big.touched_services.insert(ServiceKey::new("ns", format!("s{i}")));
        }
        let cases = [
            (
                small,
                "incremental sync: 2 steps (bind_address=1 unbind_address=1), 1 failed, 1 services changed (demo/web), queued 1.500ms, in 3.000ms",
            ),
            (big.clone(), "full sync: 0 steps, 1 failed, 6 services changed, in 0.000ns"),
            (
                sliced,
                "verification sync: 40 steps, 0 failed, graceful removals of 8 virtual servers left for the next syncs, 0 services changed, in 0.000ns",
            ),
            (
                SyncReport { verification: true, ..big },
                "verification sync: 0 steps, 1 failed, 6 services changed, in 0.000ns",
            ),
        ];
        for (report, want) in cases {
            assert_eq!(report.to_string(), want);
        }
    }
}
