//! [`RunArgs`]: the flags of `run`, as clap parses them (kube-proxy's names).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{DEFAULT_STATE_DIR, RateEstimation, parse_duration};

/// The flags of `kube-ipvs-proxy run`. Names are kube-proxy's; every value is optional so that
/// a flag given overrides the file and a flag not given does not.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Path to a kubeconfig file; without it (and without `clientConnection.kubeconfig` in
    /// --config) the in-cluster configuration is used.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) YAML file, or a kube-proxy
    /// ConfigMap holding one; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Take Services, EndpointSlices and the Node from this multi-document YAML file instead
    /// of an API server, re-reading it when it changes (standalone mode).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// A virtual server deleted by someone else is made again within this (the kernel's count
    /// of them is read every second, their list when it differs); graceful removals and the
    /// nftables sets' digests are checked this often (Go duration; default 30s).
    #[arg(long, alias = "sync-period", value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_sync_period: Option<Duration>,
    /// Read every virtual server's real servers, the dummy link's addresses and the list of
    /// virtual servers once this often, a slice each second: what someone else deleted or
    /// altered there is repaired within it (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub real_server_verify_period: Option<Duration>,
    /// Minimum time between syncs; changes arriving meanwhile are coalesced (default 0s).
    #[arg(long, alias = "min-sync-period", value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// IPVS scheduler for virtual servers (default rr).
    #[arg(long, alias = "scheduler", value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// The cluster's pod CIDR(s), comma-separated for dual-stack.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// Masquerade all traffic to Service addresses.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub masquerade_all: Option<bool>,
    /// The packet mark bit (0-31) that asks for masquerade in the proxy's nftables table
    /// (upstream's `iptables.masqueradeBit`; default 14).
    #[arg(long, alias = "iptables-masquerade-bit", value_parser = clap::value_parser!(u8).range(0..=31),
          value_name = "BIT")]
    pub masquerade_bit: Option<u8>,
    /// Comma-separated CIDRs whose virtual servers this proxy never touches.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub ipvs_exclude_cidrs: Option<String>,
    /// Comma-separated CIDRs (or `primary`) selecting the node addresses NodePorts (and
    /// health-check node port servers) listen on.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub nodeport_addresses: Option<String>,
    /// Set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 (needed by MetalLB L2).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ipvs_strict_arp: Option<bool>,
    /// The kernel's IPVS rate estimation: left (keep), off before Linux 6.2 (auto), or off.
    #[arg(long, value_enum, value_name = "MODE")]
    pub ipvs_rate_estimation: Option<RateEstimation>,
    /// IPVS timeout for idle TCP sessions (0 leaves the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// IPVS timeout for TCP sessions after FIN (0 leaves the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// IPVS timeout for UDP packets (0 leaves the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// host:port (or IP) for /healthz and /livez; empty disables (default 0.0.0.0:10256).
    #[arg(long, value_name = "ADDR")]
    pub healthz_bind_address: Option<String>,
    /// host:port (or IP) for /metrics and the debug endpoint; empty disables (default 127.0.0.1:10249).
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind_address: Option<String>,
    /// Where health-check node port servers listen when no --nodeport-addresses prefix applies
    /// (default 0.0.0.0: every address of both families).
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// Name of the dummy link holding Service addresses.
    #[arg(long, default_value = "kube-ipvs0", value_name = "NAME")]
    pub interface: String,
    /// Where the record of the virtual servers this proxy made on node addresses is kept across
    /// restarts; a tmpfs such as /run, which lives exactly as long as the kernel's IPVS table.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// How long a removed TCP destination with open connections keeps weight 0 before it is
    /// deleted anyway (default 15m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub graceful_termination: Option<Duration>,
    /// Connection tracking table size per CPU (0: leave nf_conntrack_max alone; default 32768).
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<u32>,
    /// Lower bound of nf_conntrack_max (default 131072).
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<u32>,
    /// Idle timeout of established TCP connections in conntrack (0: leave; default 24h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// conntrack timeout of TCP connections in CLOSE_WAIT (0: leave; default 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Set nf_conntrack_tcp_be_liberal (accept out-of-window TCP packets).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// conntrack timeout of UDP flows (0: leave the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_udp_timeout: Option<Duration>,
    /// conntrack timeout of UDP streams (0: leave the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// How traffic from pods is told from the rest: ClusterCIDR (default), NodeCIDR,
    /// BridgeInterface or InterfaceNamePrefix.
    #[arg(long, value_name = "MODE")]
    pub detect_local_mode: Option<String>,
    /// The bridge pods are attached to, for --detect-local-mode=BridgeInterface.
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// The name prefix of pods' interfaces, for --detect-local-mode=InterfaceNamePrefix.
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// Accepted for compatibility; this proxy only does `ipvs`.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
}
