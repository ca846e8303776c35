//! The daemon's configuration: `run`'s flags (kube-proxy's names, so operators' arguments keep
//! working) over an optional `--config` KubeProxyConfiguration file over upstream's defaults.

mod args;
mod document;
mod duration;
mod file;
mod rate_estimation;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use args::RunArgs;
pub use duration::{format_duration, parse_duration};
pub use file::FileConfig;
pub use ipnet::IpNet;
pub use model::NodePortAddress;
pub use rate_estimation::RateEstimation;

/// Upstream's default `syncPeriod` for IPVS mode.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);
/// Issue 10's bound on repairing a real server someone else deleted or altered.
pub const DEFAULT_REAL_SERVER_VERIFY_PERIOD: Duration = Duration::from_secs(300);
/// How long removed TCP destinations may drain by default (upstream has no limit; its
/// graceful-termination manager retries every minute for as long as connections remain).
pub const DEFAULT_GRACEFUL_TERMINATION: Duration = Duration::from_secs(15 * 60);
/// Upstream's default health server address.
pub const DEFAULT_HEALTHZ: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10256);
/// Upstream's default metrics server address.
pub const DEFAULT_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10249);

/// Why a configuration could not be used. Each variant names the value or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A duration is not in Go's syntax.
    #[error("invalid duration {value:?}: {why}")]
    Duration {
        /// The text given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A CIDR is malformed.
    #[error(transparent)]
    Cidr(#[from] model::PrefixError),
    /// An address (`host:port` or IP) is malformed.
    #[error("invalid address {value:?} for {setting}")]
    Address {
        /// The setting it was given for.
        setting: &'static str,
        /// The text given.
        value: String,
    },
    /// A field of the configuration file has the wrong type or value.
    #[error("field {field}: {why}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The scheduler is not one the kernel has.
    #[error("unknown IPVS scheduler {0:?} (known: {known})", known = model::KNOWN_SCHEDULERS.join(", "))]
    Scheduler(String),
    /// The file is not YAML.
    #[error("not YAML: {0}")]
    Yaml(String),
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Something in the configuration file is wrong.
    #[error("in {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<ConfigError>,
    },
    /// No node name was given and the hostname could not be read.
    #[error("cannot determine the node name (give --hostname-override): {0}")]
    Hostname(String),
}

impl ConfigError {
    fn field(field: &str, why: &str) -> ConfigError {
        ConfigError::Field { field: field.to_string(), why: why.to_string() }
    }
}

/// Parses a comma-separated CIDR list (kube-proxy's `--cluster-cidr` form), ignoring blanks.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, ConfigError> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Ok(model::parse_prefix(s)?)).collect()
}

/// Parses upstream's `nodePortAddresses`: CIDRs, or the single keyword `primary`.
pub fn parse_node_port_addresses(list: &[String]) -> Result<Vec<NodePortAddress>, ConfigError> {
    let parsed = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| Ok(s.parse::<NodePortAddress>()?))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    if parsed.len() > 1 && parsed.contains(&NodePortAddress::Primary) {
        return Err(ConfigError::field("nodePortAddresses", "\"primary\" cannot be combined with CIDRs"));
    }
    Ok(parsed)
}

/// Where `run` keeps, and `cleanup` reads, the record of what the proxy made on node addresses.
pub const DEFAULT_STATE_DIR: &str = "/run/kube-ipvs-proxy";

/// The resolved configuration `run` works with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// kubeconfig file; `None` means in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Standalone mode's object file.
    pub from_file: Option<PathBuf>,
    /// This node's name.
    pub node_name: String,
    /// Within this a virtual server deleted by someone else is made again; the period of the
    /// verification's syncs.
    pub sync_period: Duration,
    /// Period of the real servers' verification.
    pub real_server_verify_period: Duration,
    /// Minimum time between syncs.
    pub min_sync_period: Duration,
    /// IPVS scheduler.
    pub scheduler: String,
    /// Pod CIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade everything.
    pub masquerade_all: bool,
    /// The packet mark bit asking for masquerade in the nftables table.
    pub masquerade_bit: u8,
    /// Virtual servers in these blocks are never touched.
    pub exclude_cidrs: Vec<IpNet>,
    /// Which node addresses NodePorts listen on (empty: all).
    pub node_port_addresses: Vec<NodePortAddress>,
    /// Set the strict ARP sysctls.
    pub strict_arp: bool,
    /// What to do with the kernel's IPVS rate estimation.
    pub rate_estimation: RateEstimation,
    /// IPVS timeouts to set at start, if any is configured (0 fields are left unchanged).
    pub timeouts: Option<ipvs::Timeouts>,
    /// /healthz and /livez; `None` disables.
    pub healthz_bind_address: Option<SocketAddr>,
    /// /metrics and /debug; `None` disables.
    pub metrics_bind_address: Option<SocketAddr>,
    /// Where health-check node port servers listen.
    pub bind_address: IpAddr,
    /// The dummy link's name.
    pub interface: String,
    /// The ownership record's directory.
    pub state_dir: PathBuf,
    /// How long a removed TCP destination with connections may drain.
    pub graceful_termination: Duration,
    /// kube-proxy's conntrack tuning.
    pub conntrack: Conntrack,
    /// How traffic from pods is told from the rest.
    pub detect_local: DetectLocal,
}

/// Upstream's `detectLocalMode`: how traffic from the node's pods is told from the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocal {
    /// Source inside `clusterCIDR`.
    ClusterCidr,
    /// Source inside the Node's `spec.podCIDRs`.
    NodeCidr,
    /// Arriving on this bridge.
    BridgeInterface(String),
    /// Arriving on an interface whose name starts with this.
    InterfaceNamePrefix(String),
}

impl DetectLocal {
    /// The mode from its name and the interface settings, as upstream validates them: an
    /// interface mode needs its interface, a valid name (at most 15 characters, no quote or blank).
    fn resolve(mode: Option<&str>, bridge: Option<&str>, prefix: Option<&str>) -> Result<DetectLocal, ConfigError> {
        let interface = |field: &str, name: Option<&str>| -> Result<String, ConfigError> {
            let name = name.map(str::trim).filter(|n| !n.is_empty());
            let name = name.ok_or_else(|| ConfigError::field(field, "required by the detectLocalMode"))?;
            if name.len() > 15 || name.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '*') {
                return Err(ConfigError::field(field, &format!("{name:?} is not an interface name")));
            }
            Ok(name.to_string())
        };
        match mode.map(str::trim).unwrap_or("") {
            "" | "ClusterCIDR" => Ok(DetectLocal::ClusterCidr),
            "NodeCIDR" => Ok(DetectLocal::NodeCidr),
            "BridgeInterface" => Ok(DetectLocal::BridgeInterface(interface("detectLocal.bridgeInterface", bridge)?)),
            "InterfaceNamePrefix" => {
                Ok(DetectLocal::InterfaceNamePrefix(interface("detectLocal.interfaceNamePrefix", prefix)?))
            }
            other => Err(ConfigError::field("detectLocalMode", &format!("unknown mode {other:?}"))),
        }
    }
}

/// kube-proxy's conntrack tuning (`conntrack.*`, `--conntrack-*`), upstream's defaults applied;
/// a zero leaves the kernel's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// nf_conntrack_max per CPU (0: leave nf_conntrack_max alone).
    pub max_per_core: u32,
    /// Lower bound of nf_conntrack_max.
    pub min: u32,
    /// nf_conntrack_tcp_timeout_established.
    pub tcp_established: Duration,
    /// nf_conntrack_tcp_timeout_close_wait.
    pub tcp_close_wait: Duration,
    /// nf_conntrack_tcp_be_liberal=1.
    pub tcp_be_liberal: bool,
    /// nf_conntrack_udp_timeout.
    pub udp: Duration,
    /// nf_conntrack_udp_timeout_stream.
    pub udp_stream: Duration,
}

impl Conntrack {
    /// The nf_conntrack_max to set on a node with `cpus` CPUs: max(max per core x CPUs, min),
    /// as upstream; `None` when max per core is 0 (leave it).
    pub fn max(&self, cpus: u32) -> Option<u32> {
        (self.max_per_core > 0).then(|| self.max_per_core.saturating_mul(cpus).max(self.min))
    }
}

impl Settings {
    /// What `/configz` answers: the configuration in use as a `KubeProxyConfiguration`, under
    /// the key upstream uses.
    pub fn configz(&self) -> serde_json::Value {
        let join = |list: &[String]| list.join(",");
        let cidrs = |list: &[IpNet]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let timeouts = self.timeouts.unwrap_or_default();
        serde_json::json!({
            "kubeproxy.config.k8s.io": {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "ipvs",
                "hostnameOverride": self.node_name,
                "clientConnection": {"kubeconfig": self.kubeconfig.as_ref().map(|p| p.display().to_string()).unwrap_or_default()},
                "bindAddress": self.bind_address.to_string(),
                "healthzBindAddress": self.healthz_bind_address.map(|a| a.to_string()).unwrap_or_default(),
                "metricsBindAddress": self.metrics_bind_address.map(|a| a.to_string()).unwrap_or_default(),
                "clusterCIDR": join(&cidrs(&self.cluster_cidrs)),
                "masqueradeAll": self.masquerade_all,
                "iptables": {"masqueradeBit": self.masquerade_bit},
                "nodePortAddresses": self.node_port_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ipvs": {
                    "scheduler": self.scheduler,
                    "syncPeriod": format_duration(self.sync_period),
                    "minSyncPeriod": format_duration(self.min_sync_period),
                    "excludeCIDRs": cidrs(&self.exclude_cidrs),
                    "strictARP": self.strict_arp,
                    "tcpTimeout": format!("{}s", timeouts.tcp),
                    "tcpFinTimeout": format!("{}s", timeouts.tcp_fin),
                    "udpTimeout": format!("{}s", timeouts.udp),
                },
            }
        })
    }

    /// Resolves flags over the `--config` file over defaults. Returns the settings and the
    /// warnings to log (ignored file fields, a `mode` other than ipvs).
    pub fn resolve(args: &RunArgs) -> Result<(Settings, Vec<String>), ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(args, file, read_hostname)
    }

    /// [`Settings::resolve`] with the file already parsed and the hostname source injected.
    pub fn merge(
        args: &RunArgs,
        file: FileConfig,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Result<(Settings, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        if !file.ignored.is_empty() {
            warnings.push(format!(
                "configuration fields ignored (they do not apply to this proxy): {}",
                file.ignored.join(", ")
            ));
        }
        for (what, mode) in [("mode", &file.mode), ("--proxy-mode", &args.proxy_mode)] {
            if let Some(mode) = mode.as_deref().filter(|m| !m.is_empty() && *m != "ipvs") {
                warnings.push(format!("{what} is {mode:?}: this proxy always works in IPVS mode"));
            }
        }

        let node_name = match args.hostname_override.clone().or(file.hostname_override) {
            Some(name) => name,
            None => hostname().map_err(ConfigError::Hostname)?,
        }
        .trim()
        .to_lowercase();
        if node_name.is_empty() {
            return Err(ConfigError::Hostname("empty node name".into()));
        }

        let scheduler = args.ipvs_scheduler.clone().or(file.scheduler).unwrap_or_else(|| "rr".into());
        if !model::is_known_scheduler(&scheduler) {
            return Err(ConfigError::Scheduler(scheduler));
        }
        let cluster_cidrs = match &args.cluster_cidr {
            Some(text) => parse_cidrs(text)?,
            None => file.cluster_cidrs.unwrap_or_default(),
        };
        let exclude_cidrs = match &args.ipvs_exclude_cidrs {
            Some(text) => parse_cidrs(text)?,
            None => file.exclude_cidrs.unwrap_or_default(),
        };
        let node_port_addresses = match &args.nodeport_addresses {
            Some(text) => parse_node_port_addresses(&text.split(',').map(str::to_string).collect::<Vec<_>>())?,
            None => file.node_port_addresses.unwrap_or_default(),
        };
        // IPVS keeps whole seconds: a fraction would silently vanish (0 means "unchanged").
        let secs = |field: &str, d: Option<Duration>| -> Result<u32, ConfigError> {
            let Some(d) = d else { return Ok(0) };
            if d.subsec_nanos() != 0 {
                return Err(ConfigError::field(
                    field,
                    &format!("{}: IPVS timeouts are whole seconds", format_duration(d)),
                ));
            }
            u32::try_from(d.as_secs()).map_err(|_| ConfigError::field(field, "too large for IPVS (at most 2^32-1 s)"))
        };
        let timeouts = ipvs::Timeouts {
            tcp: secs("ipvs.tcpTimeout", args.ipvs_tcp_timeout.or(file.tcp_timeout))?,
            tcp_fin: secs("ipvs.tcpFinTimeout", args.ipvs_tcpfin_timeout.or(file.tcp_fin_timeout))?,
            udp: secs("ipvs.udpTimeout", args.ipvs_udp_timeout.or(file.udp_timeout))?,
        };
        let healthz_bind_address = bind_address(
            "healthz-bind-address",
            args.healthz_bind_address.as_deref(),
            file.healthz_bind_address.as_deref(),
            DEFAULT_HEALTHZ,
        )?;
        let metrics_bind_address = bind_address(
            "metrics-bind-address",
            args.metrics_bind_address.as_deref(),
            file.metrics_bind_address.as_deref(),
            DEFAULT_METRICS,
        )?;
        let sync_period =
            args.ipvs_sync_period.or(file.sync_period).filter(|d| !d.is_zero()).unwrap_or(DEFAULT_SYNC_PERIOD);
        let settings = Settings {
            kubeconfig: args.kubeconfig.clone().or(file.kubeconfig),
            from_file: args.from_file.clone(),
            node_name,
            sync_period,
            real_server_verify_period: args
                .real_server_verify_period
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_REAL_SERVER_VERIFY_PERIOD),
            min_sync_period: args.ipvs_min_sync_period.or(file.min_sync_period).unwrap_or(Duration::ZERO),
            scheduler,
            cluster_cidrs,
            masquerade_all: args.masquerade_all.or(file.masquerade_all).unwrap_or(false),
            masquerade_bit: args.masquerade_bit.or(file.masquerade_bit).unwrap_or(netfilter::DEFAULT_MASQUERADE_BIT),
            exclude_cidrs,
            node_port_addresses,
            strict_arp: args.ipvs_strict_arp.or(file.strict_arp).unwrap_or(false),
            rate_estimation: args.ipvs_rate_estimation.unwrap_or_default(),
            timeouts: (timeouts != ipvs::Timeouts::default()).then_some(timeouts),
            healthz_bind_address,
            metrics_bind_address,
            bind_address: args.bind_address.or(file.bind_address).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            interface: args.interface.clone(),
            state_dir: args.state_dir.clone(),
            graceful_termination: args.graceful_termination.unwrap_or(DEFAULT_GRACEFUL_TERMINATION),
            detect_local: DetectLocal::resolve(
                args.detect_local_mode.as_deref().or(file.detect_local_mode.as_deref()),
                args.pod_bridge_interface.as_deref().or(file.bridge_interface.as_deref()),
                args.pod_interface_name_prefix.as_deref().or(file.interface_name_prefix.as_deref()),
            )?,
            conntrack: Conntrack {
                max_per_core: args.conntrack_max_per_core.or(file.conntrack.max_per_core).unwrap_or(32 * 1024),
                // Upstream defaults a zero min too (kubeadm's ConfigMap writes nulls and zeros).
                min: args.conntrack_min.or(file.conntrack.min).filter(|m| *m > 0).unwrap_or(128 * 1024),
                tcp_established: args
                    .conntrack_tcp_timeout_established
                    .or(file.conntrack.tcp_established)
                    .unwrap_or(Duration::from_secs(24 * 3600)),
                tcp_close_wait: args
                    .conntrack_tcp_timeout_close_wait
                    .or(file.conntrack.tcp_close_wait)
                    .unwrap_or(Duration::from_secs(3600)),
                tcp_be_liberal: args.conntrack_tcp_be_liberal.or(file.conntrack.tcp_be_liberal).unwrap_or(false),
                udp: args.conntrack_udp_timeout.or(file.conntrack.udp).unwrap_or(Duration::ZERO),
                udp_stream: args.conntrack_udp_timeout_stream.or(file.conntrack.udp_stream).unwrap_or(Duration::ZERO),
            },
        };
        // Upstream's validation refuses these.
        if settings.min_sync_period > settings.sync_period {
            let why = format!(
                "{} must be less than or equal to ipvs.syncPeriod {}",
                format_duration(settings.min_sync_period),
                format_duration(settings.sync_period)
            );
            return Err(ConfigError::field("ipvs.minSyncPeriod", &why));
        }
        let v4 = settings.cluster_cidrs.iter().filter(|c| matches!(c, IpNet::V4(_))).count();
        if settings.cluster_cidrs.len() > 2 || v4 > 1 || settings.cluster_cidrs.len() - v4 > 1 {
            return Err(ConfigError::field("clusterCIDR", "at most one CIDR per IP family (two for dual-stack)"));
        }
        Ok((settings, warnings))
    }
}

/// A server address from a flag (where empty disables the server) or the file (where empty
/// means the default, as upstream's defaulting does). A bare IP takes the default port.
fn bind_address(
    setting: &'static str,
    flag: Option<&str>,
    file: Option<&str>,
    default: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let text = match (flag, file) {
        (Some(flag), _) if flag.trim().is_empty() => return Ok(None),
        (Some(flag), _) => flag.trim(),
        (None, Some(file)) => file.trim(),
        (None, None) => return Ok(Some(default)),
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, default.port())));
    }
    Err(ConfigError::Address { setting, value: text.to_string() })
}

impl Settings {
    /// The model's settings.
    pub fn model_config(&self) -> model::Config {
        let mut config = model::Config::new(self.node_name.clone());
        config.node_port_addresses = self.node_port_addresses.clone();
        config.default_scheduler = self.scheduler.clone();
        config.cluster_cidrs = self.cluster_cidrs.clone();
        config.masquerade_all = self.masquerade_all;
        config.exclude_cidrs = self.exclude_cidrs.clone();
        config.graceful_termination = self.graceful_termination;
        config
    }
}

/// The kernel's hostname, as upstream uses it for the node name when none is given.
fn read_hostname() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| format!("/proc/sys/kernel/hostname: {e}"))
}

#[cfg(test)]
mod tests;
