//! Prometheus metrics: upstream's `kubeproxy_*` names (so existing dashboards keep working)
//! and this proxy's own `kubeipvsproxy_*` ones.

use std::sync::atomic::AtomicU64;

use k8s_openapi::jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;
use proxier::{HealthFacts, SyncReport};

use crate::rest_client::{RestClientLayer, duration_family};

/// Labels of `kubeipvsproxy_kernel_operations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    result: &'static str,
}

/// Labels of `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    traffic_policy: &'static str,
}

/// Labels of `kubeproxy_proxy_healthz_total` and `kubeproxy_proxy_livez_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// Labels of `kubernetes_build_info` (the ones that have a meaning for this binary).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    git_version: String,
    platform: String,
}

/// Labels of `kubeipvsproxy_syncs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    kind: &'static str,
}

/// Every metric the daemon exports, registered once.
pub struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    network_programming: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    endpoint_changes: Counter,
    service_changes: Counter,
    restore_failures: Counter,
    full_sync_duration: Histogram,
    partial_sync_duration: Histogram,
    service_changes_pending: Gauge,
    endpoint_changes_pending: Gauge,
    healthz: Family<CodeLabels, Counter>,
    livez: Family<CodeLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    rest_client: RestClientLayer,
    no_local_endpoints: Family<PolicyLabels, Gauge>,
    operations: Family<OperationLabels, Counter>,
    syncs: Family<SyncLabels, Counter>,
    plan_steps: Histogram,
    virtual_servers: Gauge,
    real_servers: Gauge,
}

fn seconds(t: Timestamp) -> f64 {
    t.as_nanosecond() as f64 / 1e9
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics, zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // Upstream's buckets, so that existing dashboards' quantiles mean the same.
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let network_programming = Histogram::new(
            linear_buckets(0.25, 0.25, 2)
                .chain(linear_buckets(1.0, 1.0, 59))
                .chain(linear_buckets(60.0, 5.0, 12))
                .chain(linear_buckets(120.0, 30.0, 7)),
        );
        let m = Metrics {
            sync_duration,
            network_programming,
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            restore_failures: Counter::default(),
            full_sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            partial_sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            service_changes_pending: Gauge::default(),
            endpoint_changes_pending: Gauge::default(),
            healthz: Family::default(),
            livez: Family::default(),
            build_info: Family::default(),
            rest_client: RestClientLayer { requests: Family::default(), duration: duration_family() },
            no_local_endpoints: Family::default(),
            operations: Family::default(),
            syncs: Family::default(),
            plan_steps: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            virtual_servers: Gauge::default(),
            real_servers: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        // Upstream's IPVS mode counts its failed iptables-restore runs here; this proxy's
        // equivalent is a failed nftables setup or update (the dashboards' alert on it holds).
        registry.register(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy nftables (upstream: iptables-restore) failures",
            m.restore_failures.clone(),
        );
        // Upstream's name ends in _total although it is a gauge.
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeipvsproxy_kernel_operations",
            "Kernel writes (IPVS operations and kube-ipvs0 address changes) by kind and result",
            m.operations.clone(),
        );
        registry.register("kubeipvsproxy_syncs", "Syncs by kind (full or incremental)", m.syncs.clone());
        registry.register("kubeipvsproxy_plan_steps", "Steps per sync plan", m.plan_steps.clone());
        registry.register(
            "kubeipvsproxy_model_virtual_servers",
            "Virtual servers the model wants",
            m.virtual_servers.clone(),
        );
        registry.register("kubeipvsproxy_model_real_servers", "Real servers the model wants", m.real_servers.clone());
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        registry.register("kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status", m.healthz.clone());
        registry.register("kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", m.livez.clone());
        registry.register(
            "kubernetes_build_info",
            "A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                git_version: concat!("v", env!("CARGO_PKG_VERSION"), "-kube-ipvs-proxy").to_string(),
                platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
            })
            .set(1);
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        // client-go's names for the Kubernetes client's requests.
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            m.rest_client.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            m.rest_client.duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one sync.
    pub fn record_sync(&self, report: &SyncReport) {
        self.sync_duration.observe(report.duration.as_secs_f64());
        let by_kind = if report.full { &self.full_sync_duration } else { &self.partial_sync_duration };
        by_kind.observe(report.duration.as_secs_f64());
        self.plan_steps.observe(report.plan_steps as f64);
        self.syncs.get_or_create(&SyncLabels { kind: if report.full { "full" } else { "incremental" } }).inc();
        for ((kind, ok), n) in &report.steps {
            let labels = OperationLabels { kind, result: if *ok { "success" } else { "error" } };
            self.operations.get_or_create(&labels).inc_by(*n as u64);
        }
        self.endpoint_changes.inc_by(report.endpoint_changes);
        self.service_changes.inc_by(report.service_changes);
        if report.filter_failed {
            self.restore_failures.inc();
        }
        self.virtual_servers.set(i64::try_from(report.virtual_servers).unwrap_or(i64::MAX));
        self.real_servers.set(i64::try_from(report.real_servers).unwrap_or(i64::MAX));
        if report.succeeded() {
            let now = Timestamp::now();
            self.last_sync.set(seconds(now));
            for t in &report.trigger_times {
                self.network_programming.observe(now.duration_since(*t).as_secs_f64().max(0.0));
            }
        }
    }

    /// Counts one answer of `/healthz` (`readiness`) or `/livez` with its status code.
    pub fn count_health(&self, readiness: bool, code: u16) {
        let family = if readiness { &self.healthz } else { &self.livez };
        family.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }

    /// Sets the changes waiting for the next sync: (Service changes, EndpointSlice changes).
    pub fn set_pending_changes(&self, (services, endpoints): (u64, u64)) {
        self.service_changes_pending.set(i64::try_from(services).unwrap_or(i64::MAX));
        self.endpoint_changes_pending.set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    /// The layer that records the Kubernetes client's requests in these metrics (give it to
    /// kube's `ClientBuilder::with_layer`).
    pub fn rest_client_layer(&self) -> RestClientLayer {
        self.rest_client.clone()
    }

    /// Sets the Services with a Local traffic policy and no local endpoint.
    pub fn set_no_local_endpoints(&self, internal: usize, external: usize) {
        for (policy, n) in [("internal", internal), ("external", external)] {
            self.no_local_endpoints
                .get_or_create(&PolicyLabels { traffic_policy: policy })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition, with the health facts current at scrape time.
    pub fn encode(&self, health: &HealthFacts) -> Result<String, std::fmt::Error> {
        if let Some(t) = health.last_queued {
            self.last_queued.set(seconds(t));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// The samples of an exposition, by series (`name{labels}` as written) to value: a test
    /// then compares values, where matching a line's text as a prefix would take 10 for 1.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l:?}"));
                (series.to_string(), value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
            })
            .collect()
    }

    fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
        *samples.get(series).unwrap_or_else(|| panic!("no series {series:?} in {samples:#?}"))
    }

    #[test]
    fn exports_upstreams_names_and_ours() {
        let m = Metrics::new();
        let mut report =
            SyncReport { full: true, plan_steps: 3, endpoint_changes: 2, service_changes: 1, ..Default::default() };
        report.steps.insert(("add_virtual_server", true), 1);
        report.steps.insert(("add_real_server", true), 1);
        report.steps.insert(("add_real_server", false), 1);
        report.failed = 1;
        report.filter_failed = true;
        report.duration = Duration::from_millis(3);
        report.virtual_servers = 1;
        report.real_servers = 2;
        m.record_sync(&report);
        m.set_no_local_endpoints(0, 2);
        let facts = HealthFacts {
            pending_since: None,
            last_synced: None,
            last_queued: Some(Timestamp::now()),
            node_eligible: true,
            sync_failing: false,
        };
        let got = samples(&m.encode(&facts).unwrap());
        let expected = [
            ("kubeproxy_sync_proxy_rules_duration_seconds_count", 1.0),
            ("kubeproxy_network_programming_duration_seconds_count", 0.0),
            ("kubeproxy_sync_proxy_rules_endpoint_changes_total", 2.0),
            ("kubeproxy_sync_proxy_rules_service_changes_total", 1.0),
            ("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", 1.0),
            ("kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}", 2.0),
            ("kubeipvsproxy_kernel_operations_total{kind=\"add_real_server\",result=\"error\"}", 1.0),
            ("kubeipvsproxy_kernel_operations_total{kind=\"add_real_server\",result=\"success\"}", 1.0),
            ("kubeipvsproxy_syncs_total{kind=\"full\"}", 1.0),
            ("kubeipvsproxy_plan_steps_count", 1.0),
            ("kubeipvsproxy_model_virtual_servers", 1.0),
            ("kubeipvsproxy_model_real_servers", 2.0),
            // A sync with a failure is not a successful sync.
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", 0.0),
        ];
        for (series, want) in expected {
            assert_eq!(value(&got, series), want, "{series}");
        }
        // A Unix time in seconds, now: after 2020, before 2100.
        let queued = value(&got, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds");
        assert!((1.6e9..4.1e9).contains(&queued), "{queued}");
    }

    #[test]
    fn network_programming_is_observed_from_trigger_times_of_successful_syncs() {
        let ago = |secs: i64| Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs);
        // (sync failures, trigger times' ages in s, expected count, all under 5 s)
        let cases: [(usize, &[i64], u64); 3] = [
            (0, &[3, 3], 2),
            (0, &[], 0),
            // Upstream observes only after the rules are written.
            (1, &[3], 0),
        ];
        for (i, (failed, ages, count)) in cases.into_iter().enumerate() {
            let m = Metrics::new();
            let report =
                SyncReport { failed, trigger_times: ages.iter().map(|a| ago(*a)).collect(), ..Default::default() };
            m.record_sync(&report);
            let facts = HealthFacts {
                pending_since: None,
                last_synced: None,
                last_queued: None,
                node_eligible: true,
                sync_failing: false,
            };
            let got = samples(&m.encode(&facts).unwrap());
            let series = |suffix: &str| format!("kubeproxy_network_programming_duration_seconds_{suffix}");
            assert_eq!(value(&got, &series("count")), count as f64, "case {i}");
            assert_eq!(value(&got, &series("bucket{le=\"5.0\"}")), count as f64, "case {i}: all under 5 s");
            assert_eq!(value(&got, &series("bucket{le=\"2.0\"}")), 0.0, "case {i}: 3 s ago is not under 2 s");
        }
    }
}
