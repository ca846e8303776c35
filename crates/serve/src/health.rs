//! The proxy's health: `/livez` as upstream defines it (unhealthy when a change has been waiting
//! longer than twice the sync period without being applied); `/healthz` (readiness) also fails
//! while the node is being deleted, before the first complete sync, and while syncs fail.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use proxier::HealthFacts;
use serde::Serialize;

/// Go's zero `time.Time` in JSON, which upstream sends before the first sync.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One health answer: the status to send and upstream's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// Whether to answer 200 (else 503).
    #[serde(skip)]
    pub healthy: bool,
    /// When a sync last left nothing pending (RFC 3339), or Go's zero time before that.
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
    /// Now (RFC 3339).
    #[serde(rename = "currentTime")]
    pub current_time: String,
    /// Whether the node is not being deleted (only in `/healthz`).
    #[serde(rename = "nodeEligible", skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
}

/// Whether the proxy itself keeps up: nothing pending for `timeout` (twice the sync period).
pub fn proxy_healthy(facts: &HealthFacts, now: Instant, timeout: Duration) -> bool {
    facts.pending_since.is_none_or(|since| now.saturating_duration_since(since) < timeout)
}

/// The answer for `facts` at `now`. `with_node` is readiness (`/healthz`): besides upstream's
/// rules (nothing pending too long, the node not being deleted) it needs a complete sync done
/// and the last one not failed, so that a rollout whose pods cannot program the node stops.
/// Without it, liveness (`/livez`): upstream's meaning only.
pub fn report(facts: &HealthFacts, now: Instant, timeout: Duration, with_node: bool) -> HealthReport {
    let ready = facts.node_eligible && facts.last_synced.is_some() && !facts.sync_failing;
    HealthReport {
        healthy: proxy_healthy(facts, now, timeout) && (!with_node || ready),
        last_updated: facts.last_synced.map_or_else(|| GO_ZERO_TIME.to_string(), |t| t.to_string()),
        current_time: Timestamp::now().to_string(),
        node_eligible: with_node.then_some(facts.node_eligible),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_upstreams_rules() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(60);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (pending since, check at, node eligible, healthz, livez)
        let cases: &[(Option<u64>, u64, bool, bool, bool)] = &[
            (None, 0, true, true, true),
            (None, 10_000, true, true, true),
            (Some(0), 59, true, true, true),
            (Some(0), 60, true, false, false),
            (Some(100), 150, true, true, true),
            (Some(100), 160, true, false, false),
            (None, 0, false, false, true),
            (Some(0), 60, false, false, false),
        ];
        for (i, (since, check, eligible, healthz, livez)) in cases.iter().enumerate() {
            let facts = HealthFacts {
                pending_since: since.map(at),
                last_synced: Some(Timestamp::now()),
                last_queued: None,
                node_eligible: *eligible,
                sync_failing: false,
            };
            assert_eq!(report(&facts, at(*check), timeout, true).healthy, *healthz, "case {i} healthz");
            assert_eq!(report(&facts, at(*check), timeout, false).healthy, *livez, "case {i} livez");
        }
    }

    /// Issue 8, item 4: readiness tells the truth: 503 until the first complete sync (the API
    /// server unreachable at start, a failing first sync) and while syncs fail (the nftables
    /// side included); liveness keeps upstream's meaning (nothing pending too long).
    #[test]
    fn readiness_waits_for_a_complete_sync_and_fails_with_the_syncs() {
        let now = Instant::now();
        let timeout = Duration::from_secs(60);
        // (a sync succeeded once, the last sync failed, healthz, livez)
        let cases = [
            (false, false, false, true),
            (true, false, true, true),
            (true, true, false, true),
            (false, true, false, true),
        ];
        for (synced, failing, healthz, livez) in cases {
            let facts = HealthFacts {
                pending_since: None,
                last_synced: synced.then(Timestamp::now),
                last_queued: None,
                node_eligible: true,
                sync_failing: failing,
            };
            assert_eq!(report(&facts, now, timeout, true).healthy, healthz, "synced {synced} failing {failing}");
            assert_eq!(report(&facts, now, timeout, false).healthy, livez, "synced {synced} failing {failing}");
        }
    }

    #[test]
    fn body_is_upstreams_shape() {
        let mut facts = HealthFacts {
            pending_since: None,
            last_synced: None,
            last_queued: None,
            node_eligible: true,
            sync_failing: false,
        };
        let body = serde_json::to_value(report(&facts, Instant::now(), Duration::from_secs(60), true)).unwrap();
        assert_eq!(body["lastUpdated"], GO_ZERO_TIME);
        assert_eq!(body["nodeEligible"], true);
        assert!(body["currentTime"].as_str().unwrap().ends_with('Z'));
        facts.last_synced = Some(Timestamp::now());
        let live = serde_json::to_value(report(&facts, Instant::now(), Duration::from_secs(60), false)).unwrap();
        assert!(live.get("nodeEligible").is_none());
        assert_ne!(live["lastUpdated"], GO_ZERO_TIME);
    }
}
