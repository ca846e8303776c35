//! The desired state: what the kernel should hold for the Services the model knows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvs::{RealServer, RealServerId, VirtualServer, VirtualServerId};
use serde::{Deserialize, Serialize};

use crate::names::{ServiceKey, ServicePortRef};
use crate::real_servers::RealServers;
use ipnet::IpNet;

/// Which address of a Service a virtual server listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VirtualServerKind {
    /// A `clusterIP` (bound on kube-ipvs0).
    ClusterIp,
    /// One of `externalIPs` (bound on kube-ipvs0).
    ExternalIp,
    /// A `status.loadBalancer.ingress[].ip` (bound unless it is a node address).
    LoadBalancer,
    /// A node address with the port's `nodePort` (not bound).
    NodePort,
}

impl VirtualServerKind {
    /// Whether traffic to it comes from outside the cluster, so `externalTrafficPolicy` applies.
    pub fn is_external(self) -> bool {
        !matches!(self, VirtualServerKind::ClusterIp)
    }
}

/// Which traffic to a virtual server later parts must masquerade (SNAT). Hairpin traffic (a pod
/// reaching itself through its Service) is always masqueraded and is not repeated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Masquerade {
    /// All of it (`masqueradeAll`, or external traffic with `externalTrafficPolicy: Cluster`).
    All,
    /// Traffic not from a local pod: whose source is outside the configured cluster CIDRs, or,
    /// for a family without one, host-originated traffic (source: the service address itself).
    OutsideClusterCidrs,
    /// None (source IPs are kept: `externalTrafficPolicy: Local`).
    None,
}

/// One desired virtual server with its real servers and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVirtualServer {
    /// Its configuration (scheduler, persistence flags, timeout, netmask).
    pub server: VirtualServer,
    /// Its real servers, by id only: each is [`DesiredVirtualServer::real_server`] (weight 1,
    /// masquerade forwarding), so 20 bytes each rather than a whole configuration.
    pub real_servers: RealServers<RealServerId>,
    /// The Service port it serves.
    pub origin: ServicePortRef,
    /// Which address of the Service it listens on.
    pub kind: VirtualServerKind,
    /// Which of its traffic needs masquerade.
    pub masquerade: Masquerade,
    /// `loadBalancerSourceRanges` for LoadBalancer virtual servers (empty: any source).
    pub source_ranges: Vec<IpNet>,
    /// Whether its address is to be bound on kube-ipvs0 (not for NodePorts, nor for a
    /// LoadBalancer IP that is already a node address).
    pub bind: bool,
    /// For an external address of an `externalTrafficPolicy: Local` Service: the ClusterIP and
    /// port that traffic from inside the cluster (pods, the node itself) is sent to instead, so
    /// that it reaches every endpoint, as iptables and nftables modes do; outside clients keep
    /// the local endpoints only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_circuit: Option<(IpAddr, u16)>,
}

impl DesiredVirtualServer {
    /// The configuration real server `id` is to have: weight 1, masquerade forwarding, no
    /// thresholds.
    pub fn real_server(id: RealServerId) -> RealServer {
        RealServer::new(id.addr, id.port, 1)
    }

    /// Its real servers with their configurations, ordered by id.
    pub fn real_server_configs(&self) -> impl ExactSizeIterator<Item = RealServer> + '_ {
        self.real_servers.values().map(|id| DesiredVirtualServer::real_server(*id))
    }
}

/// The desired state: the virtual servers and the addresses to bind on kube-ipvs0.
///
/// Iteration is in a stable order (by virtual server id, by address). When two Services claim the
/// same virtual server, the one with the smaller [`ServicePortRef`] wins, whatever the order of
/// updates, and the other is reported in a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Boxed: a map's nodes are half empty after ordered inserts, and a desired virtual server
    /// is a few hundred bytes; boxed, the empty slots cost a pointer each.
    #[serde(with = "crate::serde_pairs")]
    pub(crate) virtual_servers: BTreeMap<VirtualServerId, Box<DesiredVirtualServer>>,
    /// Each address to bind with how many desired virtual servers need it.
    #[serde(with = "crate::serde_pairs")]
    pub(crate) addresses: BTreeMap<IpAddr, u32>,
}

impl DesiredState {
    /// An empty desired state.
    pub fn new() -> DesiredState {
        DesiredState::default()
    }

    /// All desired virtual servers, ordered by id.
    pub fn virtual_servers(&self) -> impl ExactSizeIterator<Item = (&VirtualServerId, &DesiredVirtualServer)> {
        self.virtual_servers.iter().map(|(id, vs)| (id, &**vs))
    }

    /// The desired virtual server `id`, if any.
    pub fn virtual_server(&self, id: &VirtualServerId) -> Option<&DesiredVirtualServer> {
        self.virtual_servers.get(id).map(|vs| &**vs)
    }

    /// The addresses to bind on kube-ipvs0, ordered.
    pub fn addresses(&self) -> impl ExactSizeIterator<Item = &IpAddr> {
        self.addresses.keys()
    }

    /// Whether `addr` should be bound on kube-ipvs0.
    pub fn wants_address(&self, addr: &IpAddr) -> bool {
        self.addresses.contains_key(addr)
    }

    /// The number of desired virtual servers.
    pub fn len(&self) -> usize {
        self.virtual_servers.len()
    }

    /// Whether no virtual server is desired.
    pub fn is_empty(&self) -> bool {
        self.virtual_servers.is_empty()
    }

    /// The total number of desired real servers.
    pub fn real_server_count(&self) -> usize {
        self.virtual_servers.values().map(|v| v.real_servers.len()).sum()
    }

    /// Adds `vs` and, if it binds, one claim on its address. The caller removes any virtual
    /// server of the same id first.
    pub(crate) fn insert(&mut self, vs: DesiredVirtualServer) {
        if vs.bind
            && let Some(addr) = vs.server.id.addr()
        {
            *self.addresses.entry(addr).or_insert(0) += 1;
        }
        self.virtual_servers.insert(vs.server.id, Box::new(vs));
    }

    /// Removes `id` and, if it bound, its claim on its address.
    pub(crate) fn remove(&mut self, id: &VirtualServerId) -> Option<DesiredVirtualServer> {
        let removed = self.virtual_servers.remove(id)?;
        if removed.bind
            && let Some(addr) = id.addr()
            && let Some(n) = self.addresses.get_mut(&addr)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.addresses.remove(&addr);
            }
        }
        Some(*removed)
    }
}

/// What later parts need per Service besides its virtual servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The Service.
    pub service: ServiceKey,
    /// `healthCheckNodePort` (LoadBalancer with `externalTrafficPolicy: Local`), if any.
    pub health_check_node_port: Option<u16>,
    /// Ready endpoints on this node, counted once per address: the health check answers 200
    /// with this count when it is non-zero, 503 otherwise.
    pub local_endpoints: usize,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_traffic_local: bool,
    /// `loadBalancerSourceRanges`.
    pub source_ranges: Vec<IpNet>,
    /// The virtual servers this Service asked for, ordered (including any lost to another
    /// Service claiming the same id).
    pub virtual_servers: Vec<VirtualServerId>,
}
