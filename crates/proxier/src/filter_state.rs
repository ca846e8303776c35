//! The desired state translated for the netfilter side: per virtual server, which traffic is
//! masqueraded, which sources may reach it, whether its address is bound, and its local
//! endpoints (hairpin). Pure: the vocabulary of the model in, the `netfilter` crate's out.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::VirtualServerId;
use model::{DesiredVirtualServer, Masquerade, Model, ServiceKey};
use netfilter::{FilterConfig, FilterState, MasqueradeRule, ServiceFilter, Target};

/// The nftables settings for `cluster_cidrs` (table `kube-ipvs-proxy`, mark bit `masquerade_bit`).
pub(crate) fn filter_config(cluster_cidrs: &[IpNet], masquerade_bit: u8) -> FilterConfig {
    FilterConfig { masquerade_bit, ..FilterConfig::new(cluster_cidrs.to_vec()) }
}

/// The filter of one desired virtual server, given the cluster CIDRs and the addresses of its
/// Service's local endpoints; `None` for a firewall-mark virtual server (the proxy makes none).
///
/// "Outside the cluster CIDRs" becomes the table's non-local rule, which for a family without
/// a cluster prefix is upstream's fallback (traffic whose source is the service address).
pub(crate) fn service_filter(
    vs: &DesiredVirtualServer,
    local_endpoints: &BTreeSet<IpAddr>,
) -> Option<(Target, ServiceFilter)> {
    let VirtualServerId::Tuple { protocol, addr, port } = vs.server.id else {
        return None;
    };
    let masquerade = match vs.masquerade {
        Masquerade::All => MasqueradeRule::All,
        // For a family without a cluster prefix the table's rule is upstream's fallback (traffic
        // whose source is the service address itself: the node's own).
        Masquerade::OutsideClusterCidrs => MasqueradeRule::OutsideClusterPrefixes,
        Masquerade::None => MasqueradeRule::None,
    };
    let local_endpoints =
        vs.real_servers.keys().filter(|r| local_endpoints.contains(&r.addr)).map(|r| (r.addr, r.port)).collect();
    let filter = ServiceFilter {
        masquerade,
        bound: vs.bind,
        source_ranges: vs.source_ranges.clone(),
        local_endpoints,
        short_circuit: vs.short_circuit,
    };
    Some((Target::new(addr, protocol, port), filter))
}

/// The filter of every desired virtual server: what the periodic full reconcile writes.
pub fn filter_state(model: &Model) -> FilterState {
    FilterState::from_services(desired_filters(model))
}

/// The filter of every desired virtual server, in the desired state's order; each Service's
/// local endpoints are looked up once.
fn desired_filters(model: &Model) -> impl Iterator<Item = (Target, ServiceFilter)> + '_ {
    let mut locals: HashMap<&ServiceKey, BTreeSet<IpAddr>> = HashMap::new();
    model.desired().virtual_servers().filter_map(move |(_, vs)| {
        let local = locals.entry(&vs.origin.service).or_insert_with(|| model.local_endpoints(&vs.origin.service));
        service_filter(vs, local)
    })
}

/// What a round's sweep finds: the filter of each desired virtual server that differs from
/// `applied` (or is missing there), and `None` for each target `applied` holds that is no longer
/// desired. Empty when they agree, which is the rule: the model and what was applied drift apart
/// only through a bug. Costs a look-up per virtual server and no second whole state.
pub fn sweep_updates(model: &Model, applied: &FilterState) -> Vec<(Target, Option<ServiceFilter>)> {
    let mut updates = Vec::new();
    let mut desired_and_applied = 0;
    for (target, filter) in desired_filters(model) {
        match applied.service(&target) {
            Some(was) => {
                desired_and_applied += 1;
                if *was != filter {
                    updates.push((target, Some(filter)));
                }
            }
            None => updates.push((target, Some(filter))),
        }
    }
    // Only when `applied` holds more than the desired ones it has: a pass over its targets.
    if applied.len() > desired_and_applied {
        for (target, _) in applied.services() {
            let id = VirtualServerId::Tuple { protocol: target.protocol, addr: target.addr, port: target.port };
            if model.desired().virtual_server(&id).is_none() {
                updates.push((*target, None));
            }
        }
    }
    updates
}

/// The new filters of the virtual servers `ids` (a sync's changes): `None` for those no longer
/// desired. Costs the changed virtual servers' Services only.
pub fn filter_updates<'a>(
    model: &Model,
    ids: impl IntoIterator<Item = &'a VirtualServerId>,
) -> Vec<(Target, Option<ServiceFilter>)> {
    let mut locals: HashMap<&ServiceKey, BTreeSet<IpAddr>> = HashMap::new();
    ids.into_iter()
        .filter_map(|id| match (id, model.desired().virtual_server(id)) {
            (_, Some(vs)) => {
                let local =
                    locals.entry(&vs.origin.service).or_insert_with(|| model.local_endpoints(&vs.origin.service));
                service_filter(vs, local).map(|(t, f)| (t, Some(f)))
            }
            (VirtualServerId::Tuple { protocol, addr, port }, None) => {
                Some((Target::new(*addr, *protocol, *port), None))
            }
            (VirtualServerId::Fwmark { .. }, None) => None,
        })
        .collect()
}
