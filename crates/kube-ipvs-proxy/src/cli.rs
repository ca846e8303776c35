//! The command line: every subcommand and its flags (clap derive). Parsing only; the commands
//! themselves live in their own modules.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use ipvs::listing::Columns;

/// A Kubernetes service proxy that programs the kernel's IPVS tables over netlink.
#[derive(Debug, Parser)]
#[command(name = "kube-ipvs-proxy", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,proxier=debug`); logs go to stderr.
    #[arg(long, global = true, env = "KUBE_IPVS_PROXY_LOG", default_value = "info")]
    pub log_filter: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process; boxing buys nothing")]
pub enum Command {
    /// Run the proxy: watch the cluster (or a file, with --from-file) and keep the kernel's
    /// IPVS tables and the dummy link in step with its Services.
    Run(crate::config::RunArgs),
    /// Write the node's kernel settings as `run` does at start (IPVS's, forwarding, strict ARP,
    /// conntrack tuning) and exit: for a privileged init container, so that the daemon itself
    /// needs only CAP_NET_ADMIN. Takes the same configuration as `run`.
    NodeSettings(crate::config::RunArgs),
    /// Remove what this proxy programmed (its virtual servers, addresses and dummy link) and
    /// nothing else; never flushes.
    Cleanup(crate::cleanup::CleanupArgs),
    /// Inspect the kernel's IPVS state or the state the proxy would program.
    #[command(subcommand)]
    Debug(DebugCommand),
}

/// `debug ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the kernel's IPVS table and the kube-ipvs0 addresses (needs CAP_NET_ADMIN).
    ///
    /// Addresses and ports are always printed numerically (no DNS or /etc/services lookups);
    /// with --numeric the output is exactly what `ipvsadm -Ln` prints for the same table.
    Status(StatusArgs),
    /// Print the IPVS state the proxy would program for a file of Kubernetes objects.
    ///
    /// Needs neither root nor a kernel with IPVS.
    Render(RenderArgs),
}

/// Which columns an ipvsadm-style listing shows (at most one; by default weights and connections).
#[derive(Debug, Args, Clone, Copy)]
#[group(multiple = false)]
pub struct CounterArgs {
    /// Show traffic counters, as `ipvsadm -Ln --stats`.
    #[arg(long)]
    pub stats: bool,
    /// Show rates, as `ipvsadm -Ln --rate`.
    #[arg(long)]
    pub rate: bool,
    /// Show connection thresholds, as `ipvsadm -Ln --thresholds`.
    #[arg(long)]
    pub thresholds: bool,
    /// Show persistence templates, as `ipvsadm -Ln --persistent-conn`.
    #[arg(long)]
    pub persistent_conn: bool,
    /// Show tunnel encapsulations, as `ipvsadm -Ln --tun-info`.
    #[arg(long)]
    pub tun_info: bool,
}

impl CounterArgs {
    /// The columns these flags select.
    pub fn columns(&self) -> Columns {
        let choices = [
            (self.stats, Columns::Stats),
            (self.rate, Columns::Rate),
            (self.thresholds, Columns::Thresholds),
            (self.persistent_conn, Columns::PersistentConnections),
            (self.tun_info, Columns::TunnelInfo),
        ];
        choices.into_iter().find(|(set, _)| *set).map_or(Columns::Connections, |(_, columns)| columns)
    }
}

/// Flags of `debug status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print only what `ipvsadm -Ln` prints, byte for byte (no kube-ipvs0 addresses).
    #[arg(long, short = 'n', conflicts_with = "json")]
    pub numeric: bool,
    /// Counters to show instead of weights and connections.
    #[command(flatten)]
    pub counters: CounterArgs,
    /// Print numbers unscaled, as `ipvsadm --exact` (with --stats or --rate).
    #[arg(long)]
    pub exact: bool,
    /// List in the kernel's order instead of ipvsadm's sorted order, as `ipvsadm --nosort`.
    #[arg(long)]
    pub nosort: bool,
    /// Print the table, the IPVS info and the addresses as JSON.
    #[arg(long)]
    pub json: bool,
    /// Name of the dummy link holding the service addresses.
    #[arg(long, default_value = "kube-ipvs0")]
    pub link: String,
    /// Metrics address of a running daemon to ask which Service each virtual server serves
    /// (printed as `#  service namespace/name:port` lines; never with --numeric).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10249")]
    pub daemon: SocketAddr,
    /// Do not ask a daemon; print the kernel's state only.
    #[arg(long)]
    pub no_daemon: bool,
}

impl StatusArgs {
    /// The daemon to ask, unless --no-daemon.
    pub fn daemon_address(&self) -> Option<SocketAddr> {
        (!self.no_daemon).then_some(self.daemon)
    }
}

/// Flags of `debug render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Multi-document YAML of Services, EndpointSlices and Nodes (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// The node the proxy runs on (decides local endpoints and NodePort addresses).
    #[arg(long)]
    pub node_name: String,
    /// This node's addresses (repeatable); NodePorts listen on them. Default: the `InternalIP`
    /// addresses of the file's Node named --node-name.
    #[arg(long = "node-ip")]
    pub node_ips: Vec<IpAddr>,
    /// IPVS scheduler for Services without the scheduler annotation.
    #[arg(long, default_value = "rr", value_parser = known_scheduler)]
    pub scheduler: String,
    /// The pod network (repeatable, CIDR); decides which sources count as cluster traffic.
    #[arg(long = "cluster-cidr")]
    #[arg(value_parser = |s: &str| model::parse_prefix(s))]
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Print the desired state as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Accepts only a scheduler the kernel ships, naming the valid ones otherwise.
fn known_scheduler(name: &str) -> Result<String, String> {
    if model::is_known_scheduler(name) {
        Ok(name.to_string())
    } else {
        Err(format!("unknown IPVS scheduler (known: {})", model::KNOWN_SCHEDULERS.join(", ")))
    }
}
