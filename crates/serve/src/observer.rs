//! What the daemon does after each sync besides the kernel: metrics, and the health-check node
//! ports and "no local endpoints" counts of the Services that changed (only those: the work is
//! proportional to the change).

use std::collections::HashMap;
use std::sync::Arc;

use model::{Model, ServiceKey};
use proxier::{SyncObserver, SyncReport};

use crate::metrics::Metrics;
use crate::node_ports::HealthCheckServers;

/// Per Service: (internal policy Local without local endpoints, external likewise).
type NoLocal = (bool, bool);

/// The daemon's [`SyncObserver`].
pub struct DaemonObserver {
    metrics: Arc<Metrics>,
    health_checks: HealthCheckServers,
    no_local: HashMap<ServiceKey, NoLocal>,
    counts: (usize, usize),
}

impl DaemonObserver {
    /// Updates `metrics` and runs `health_checks`.
    pub fn new(metrics: Arc<Metrics>, health_checks: HealthCheckServers) -> DaemonObserver {
        DaemonObserver { metrics, health_checks, no_local: HashMap::new(), counts: (0, 0) }
    }

    fn set_no_local(&mut self, key: &ServiceKey, now: NoLocal) {
        let before =
            if now == (false, false) { self.no_local.remove(key) } else { self.no_local.insert(key.clone(), now) };
        let before = before.unwrap_or((false, false));
        let step = |count: usize, was: bool, is: bool| match (was, is) {
            (false, true) => count + 1,
            (true, false) => count.saturating_sub(1),
            _ => count,
        };
        self.counts = (step(self.counts.0, before.0, now.0), step(self.counts.1, before.1, now.1));
    }
}

impl SyncObserver for DaemonObserver {
    fn synced(&mut self, report: &SyncReport, model: &Model) {
        self.metrics.record_sync(report);
        for key in &report.touched_services {
            let info = model.service_info(key.namespace(), key.name());
            self.health_checks.update(key, info);
            let now = info.map_or((false, false), |i| {
                (i.internal_traffic_local && i.local_endpoints == 0, i.external_traffic_local && i.local_endpoints == 0)
            });
            self.set_no_local(key, now);
        }
        self.metrics.set_no_local_endpoints(self.counts.0, self.counts.1);
        self.health_checks.retry_unbound();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_local_counts_follow_changes() {
        let servers = HealthCheckServers::new(vec!["127.0.0.1".parse().unwrap()], Arc::new(|| true));
        let mut o = DaemonObserver::new(Arc::new(Metrics::new()), servers);
        let (a, b) = (ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b"));
        let steps: &[(&ServiceKey, NoLocal, (usize, usize))] = &[
            (&a, (true, false), (1, 0)),
            (&b, (true, true), (2, 1)),
            (&a, (true, false), (2, 1)),
            (&a, (false, true), (1, 2)),
            (&b, (false, false), (0, 1)),
            (&a, (false, false), (0, 0)),
        ];
        for (i, (key, now, want)) in steps.iter().enumerate() {
            o.set_no_local(key, *now);
            assert_eq!(o.counts, *want, "step {i}");
        }
        assert!(o.no_local.is_empty());
    }
}
