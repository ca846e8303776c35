//! The proxy's settings that shape the desired state.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use crate::prefix::{PrefixError, parse_prefix};

/// The IPVS schedulers the kernel ships; a scheduler name outside this list is refused.
pub use ipvs::KNOWN_SCHEDULERS;

/// Whether `name` is one of [`KNOWN_SCHEDULERS`].
pub fn is_known_scheduler(name: &str) -> bool {
    KNOWN_SCHEDULERS.contains(&name)
}

/// The Service annotation that picks a scheduler for one Service's virtual servers.
pub(crate) const SCHEDULER_ANNOTATION: &str = "ipvs.kube-ipvs-proxy.io/scheduler";

/// One entry of `nodePortAddresses`: a prefix, or the keyword `primary` (the node's primary
/// addresses from its Node object: per family, the first `InternalIP`, else the first `ExternalIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodePortAddress {
    /// Node addresses inside this prefix.
    Cidr(IpNet),
    /// The node's primary addresses (per family, its first `InternalIP`, else first `ExternalIP`).
    Primary,
}

impl FromStr for NodePortAddress {
    type Err = PrefixError;

    /// `primary` (any case) or a prefix as [`parse_prefix`] reads it.
    fn from_str(text: &str) -> Result<NodePortAddress, PrefixError> {
        if text.trim().eq_ignore_ascii_case("primary") {
            Ok(NodePortAddress::Primary)
        } else {
            parse_prefix(text).map(NodePortAddress::Cidr)
        }
    }
}

impl fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodePortAddress::Cidr(c) => c.fmt(f),
            NodePortAddress::Primary => f.write_str("primary"),
        }
    }
}

/// The settings the model computes with. Changing them means building a new model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This node's name: endpoints whose `nodeName` equals it are local.
    pub node_name: String,
    /// `nodePortAddresses`: when non-empty, NodePorts use only node addresses matching one entry.
    pub node_port_addresses: Vec<NodePortAddress>,
    /// Scheduler for Services without the scheduler annotation (upstream `ipvs.scheduler`, `rr`).
    pub default_scheduler: String,
    /// `clusterCIDR`s: ClusterIP traffic from outside them is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// `masqueradeAll`: masquerade all ClusterIP traffic.
    pub masquerade_all: bool,
    /// `ipvs.excludeCIDRs`: virtual servers and bound addresses in these prefixes are never
    /// deleted (Services on them are still programmed, as upstream).
    pub exclude_cidrs: Vec<IpNet>,
    /// How long a removed TCP real server with connections keeps weight 0 before it is deleted
    /// anyway.
    pub graceful_termination: Duration,
}

impl Config {
    /// Settings for node `node_name` with upstream's defaults: scheduler `rr`, no prefixes, no masqueradeAll, and 15 minutes of graceful termination.
    pub fn new(node_name: impl Into<String>) -> Config {
        Config {
            node_name: node_name.into(),
            node_port_addresses: Vec::new(),
            default_scheduler: "rr".to_owned(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            exclude_cidrs: Vec::new(),
            graceful_termination: Duration::from_secs(15 * 60),
        }
    }
}
