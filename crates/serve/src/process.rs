//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ...) that Go's client exports for upstream kube-proxy and that the kubernetes-mixin "Proxy"
//! dashboard and alerts query: read from `/proc/self` (the `procfs` crate) at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Exports this process's CPU time, memory, file descriptors, threads and start time under Go
/// client's names; a value that cannot be read is left out of that scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        if let Ok(stat) = me.stat() {
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let gauges = [
                ("process_resident_memory_bytes", "Resident memory size in bytes.", (stat.rss * page) as f64),
                ("process_virtual_memory_bytes", "Virtual memory size in bytes.", stat.vsize as f64),
                ("process_threads", "Number of OS threads in the process.", stat.num_threads as f64),
            ];
            for (name, help, value) in gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
            if let Ok(boot) = procfs::boot_time_secs() {
                let gauge = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                gauge.encode(encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            let gauge = ConstGauge::new(fds as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            let gauge = ConstGauge::new(max as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    /// The names, types and plausible values the kubernetes-mixin queries rely on.
    #[test]
    fn exports_the_process_metrics_under_go_clients_names() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}:\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        // OpenMetrics names the counter family without its `_total` sample suffix.
        assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"), "{text}");
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1e6, "a running test binary holds more than a megabyte");
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
    }
}
