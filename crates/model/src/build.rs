//! One Service with its slices turned into desired virtual servers and its [`ServiceInfo`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipvs::{Family, ServiceFlags, VirtualServer, VirtualServerId};

use crate::config::{Config, NodePortAddress};
use crate::desired::{DesiredVirtualServer, Masquerade, ServiceInfo, VirtualServerKind};
use crate::endpoints::{Slice, Topology, gather, select};
use crate::names::ServicePortRef;
use crate::service::{FamilyAddresses, ServiceSpec};

/// What the model knows about its node besides the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeFacts {
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// The primary addresses (one per family, from the Node object), for
    /// `nodePortAddresses: [primary]`.
    pub primary_ips: Vec<IpAddr>,
    /// The node's current addresses (NodePorts; LoadBalancer IPs that are node addresses are not bound).
    pub addresses: Vec<IpAddr>,
    /// The node's pod CIDRs (`spec.podCIDRs`), for `detectLocalMode: NodeCIDR`.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

/// The desired virtual servers of `svc` given its `slices`, and its info.
pub(crate) fn build_service<'a>(
    svc: &ServiceSpec,
    slices: impl Iterator<Item = &'a Slice> + Clone,
    config: &Config,
    node: &NodeFacts,
) -> (Vec<DesiredVirtualServer>, ServiceInfo) {
    let topo = Topology { node_name: &config.node_name, zone: node.zone.as_deref() };
    let mut out = Vec::new();
    let mut local_addrs: BTreeSet<IpAddr> = BTreeSet::new();
    for fam in &svc.families {
        for port in &svc.ports {
            let eps = gather(slices.clone(), fam.family, &port.name, port.protocol);
            local_addrs.extend(eps.iter().filter(|(_, e)| e.local && e.ready).map(|(id, _)| id.addr));
            let selection = select(&eps, &topo);
            let origin = ServicePortRef { service: svc.key.clone(), port_name: port.name.clone() };
            let internal = if svc.internal_local { &selection.local } else { &selection.cluster };
            let external = if svc.external_local { &selection.local } else { &selection.cluster };
            for (kind, addr, vport) in listen_addresses(fam, port.port, port.node_port, config, node) {
                let id = VirtualServerId::Tuple { protocol: port.protocol, addr, port: vport };
                let real = if kind.is_external() { external } else { internal };
                // Never a node address (upstream's shouldBind): bound on kube-ipvs0, the reject
                // rule for bound addresses would refuse every other port of the node there.
                let bind = match kind {
                    VirtualServerKind::ClusterIp => true,
                    VirtualServerKind::ExternalIp | VirtualServerKind::LoadBalancer => !node.addresses.contains(&addr),
                    VirtualServerKind::NodePort => false,
                };
                out.push(DesiredVirtualServer {
                    server: virtual_server(id, svc),
                    real_servers: real.iter().copied().collect(),
                    origin: origin.clone(),
                    kind,
                    masquerade: masquerade(kind, svc, config),
                    source_ranges: if kind == VirtualServerKind::LoadBalancer {
                        svc.source_ranges.clone()
                    } else {
                        vec![]
                    },
                    bind,
                    short_circuit: (kind.is_external() && svc.external_local).then_some((fam.cluster_ip, port.port)),
                });
            }
        }
    }
    let info = ServiceInfo {
        service: svc.key.clone(),
        health_check_node_port: svc.health_check_node_port,
        local_endpoints: local_addrs.len(),
        external_traffic_local: svc.external_local,
        internal_traffic_local: svc.internal_local,
        source_ranges: svc.source_ranges.clone(),
        virtual_servers: {
            let mut ids: Vec<VirtualServerId> = out.iter().map(|v| v.server.id).collect();
            ids.sort();
            ids.dedup();
            ids
        },
    };
    (out, info)
}

/// Every (kind, address, port) one Service port listens on in one family.
fn listen_addresses(
    fam: &FamilyAddresses,
    port: u16,
    node_port: Option<u16>,
    config: &Config,
    node: &NodeFacts,
) -> Vec<(VirtualServerKind, IpAddr, u16)> {
    let mut out = vec![(VirtualServerKind::ClusterIp, fam.cluster_ip, port)];
    out.extend(fam.external_ips.iter().map(|a| (VirtualServerKind::ExternalIp, *a, port)));
    out.extend(fam.load_balancer_ips.iter().map(|a| (VirtualServerKind::LoadBalancer, *a, port)));
    if let Some(np) = node_port {
        out.extend(node_port_addresses(fam.family, config, node).map(|a| (VirtualServerKind::NodePort, a, np)));
    }
    // One Service may list the same address twice (e.g. an externalIP equal to its LB IP): keep
    // the first, which has the more internal kind.
    let mut seen = BTreeSet::new();
    out.retain(|(_, a, p)| seen.insert((*a, *p)));
    out
}

/// The node addresses of `family` NodePorts listen on, filtered by the `nodePortAddresses`
/// entries of that family (`primary` counts for both): as upstream, a family none of them names
/// keeps all of its addresses.
fn node_port_addresses<'a>(
    family: Family,
    config: &'a Config,
    node: &'a NodeFacts,
) -> impl Iterator<Item = IpAddr> + 'a {
    let of_family = move |n: &&NodePortAddress| match n {
        NodePortAddress::Cidr(c) => Family::of(&c.addr()) == family,
        NodePortAddress::Primary => true,
    };
    let match_all = !config.node_port_addresses.iter().any(|n| of_family(&n));
    node.addresses.iter().copied().filter(move |a| {
        Family::of(a) == family
            && (match_all
                || config.node_port_addresses.iter().filter(of_family).any(|n| match n {
                    NodePortAddress::Cidr(c) => c.contains(a),
                    NodePortAddress::Primary => node.primary_ips.contains(a),
                }))
    })
}

/// The virtual server configuration: scheduler, persistence for ClientIP affinity, and
/// upstream's scheduler flags: `mh` gets the source-hash port flag (`mh-port`), so that each
/// client address is not pinned to one backend.
fn virtual_server(id: VirtualServerId, svc: &ServiceSpec) -> VirtualServer {
    let mut vs = VirtualServer::new(id, svc.scheduler.clone());
    if let Some(timeout) = svc.affinity_timeout {
        vs.flags |= ServiceFlags::PERSISTENT;
        vs.timeout = timeout;
    }
    if svc.scheduler == "mh" {
        vs.flags |= ServiceFlags::SCHED2;
    }
    vs
}

/// Upstream's masquerade rule for traffic to one virtual server.
fn masquerade(kind: VirtualServerKind, svc: &ServiceSpec, config: &Config) -> Masquerade {
    if kind.is_external() {
        if svc.external_local { Masquerade::None } else { Masquerade::All }
    } else if config.masquerade_all {
        Masquerade::All
    } else {
        // Without a cluster CIDR of the family the netfilter side still masquerades what it can
        // tell is not a pod's: host-originated traffic (upstream's fallback).
        Masquerade::OutsideClusterCidrs
    }
}
