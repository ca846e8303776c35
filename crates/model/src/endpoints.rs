//! EndpointSlices checked, and the choice of which endpoints serve a virtual server: readiness,
//! the serving-and-terminating fallback, topology hints and traffic policies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvs::{Family, Protocol, RealServerId};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::ServiceKey;
use crate::service::{family_name, parse_protocol, port_number};
use crate::warning::Warning;

/// The label linking a slice to its Service.
use crate::update::SERVICE_NAME_LABEL;
/// The label upstream's watch excludes (slices of headless Services).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One port of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of a slice (its first address, as the API tells consumers to use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub addr: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
    /// Boxed: most endpoints have none, and two empty lists would cost 48 bytes each.
    pub hints: Option<Box<Hints>>,
}

/// An endpoint's topology hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hints {
    pub nodes: Vec<String>,
    pub zones: Vec<String>,
}

impl Endpoint {
    pub fn node_hints(&self) -> &[String] {
        self.hints.as_ref().map_or(&[], |h| &h.nodes)
    }

    pub fn zone_hints(&self) -> &[String] {
        self.hints.as_ref().map_or(&[], |h| &h.zones)
    }

    /// Rank for merging an endpoint listed in two slices: the more usable condition wins.
    fn rank(&self) -> u8 {
        match (self.ready, self.serving && self.terminating) {
            (true, _) => 2,
            (false, true) => 1,
            _ => 0,
        }
    }
}

/// A valid slice of the proxy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slice {
    pub service: ServiceKey,
    pub family: Family,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// What became of a slice object.
#[derive(Debug)]
pub(crate) enum ParsedSlice {
    /// Usable.
    Handled(Slice),
    /// Not the proxy's (FQDN, headless, no Service label) or malformed: treated as absent.
    Ignored,
}

/// Checks `slice` for node `node_name`; warnings name it. Malformed slices are ignored with a
/// warning.
pub(crate) fn parse_slice(slice: &EndpointSlice, node_name: &str, warnings: &mut Vec<Warning>) -> ParsedSlice {
    let object = || {
        format!(
            "EndpointSlice {}/{}",
            slice.metadata.namespace.as_deref().unwrap_or_default(),
            slice.metadata.name.as_deref().unwrap_or_default()
        )
    };
    // Only the invalid part of a slice is skipped (a port, an endpoint), as upstream does.
    let mut skipped = Vec::new();
    let parsed = check(slice, node_name, &mut skipped);
    warnings.extend(skipped.into_iter().map(|reason| Warning::new(object(), reason)));
    match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            warnings.push(Warning::new(object(), format!("{reason}; EndpointSlice skipped")));
            ParsedSlice::Ignored
        }
    }
}

fn check(slice: &EndpointSlice, node_name: &str, skipped: &mut Vec<String>) -> Result<ParsedSlice, String> {
    let labels = slice.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
        return Ok(ParsedSlice::Ignored);
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        "FQDN" => return Ok(ParsedSlice::Ignored),
        other => return Err(format!("unknown addressType {other:?}")),
    };
    let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).filter(|s| !s.is_empty()) else {
        return Err(format!("no label {SERVICE_NAME_LABEL}"));
    };
    let service = ServiceKey::new(slice.metadata.namespace.as_deref().unwrap_or_default(), service.as_str());

    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let name = p.name.clone().unwrap_or_default();
        let Some(protocol) = parse_protocol(p.protocol.as_deref()) else {
            let protocol = p.protocol.as_deref().unwrap_or("");
            skipped.push(format!("port {i} ({name:?}) has unknown protocol {protocol:?}; port skipped"));
            continue;
        };
        // An unset port means "all ports", which a virtual server cannot express: skip it.
        let Some(n) = p.port else { continue };
        let Some(port) = port_number(n) else {
            skipped.push(format!("port {i} ({name:?}) has invalid port {n}; port skipped"));
            continue;
        };
        ports.push(SlicePort { name, protocol, port });
    }

    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, e) in slice.endpoints.iter().enumerate() {
        let Some(text) = e.addresses.first() else { continue };
        let Ok(addr) = text.parse::<IpAddr>() else {
            skipped.push(format!("endpoint {i}: {text:?} is not an IP address; endpoint skipped"));
            continue;
        };
        if Family::of(&addr) != family {
            skipped.push(format!("endpoint {i}: {addr} is not {}; endpoint skipped", family_name(family)));
            continue;
        }
        let conditions = e.conditions.as_ref();
        // discovery.k8s.io/v1: unset ready and unset serving mean true, unset terminating false
        // (upstream reads them the same way, so an unset serving on a terminating endpoint
        // still makes it a fallback).
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(Endpoint {
            addr,
            ready,
            serving,
            terminating,
            local: e.node_name.as_deref() == Some(node_name),
            hints: endpoint_hints(e.hints.as_ref()),
        });
    }
    Ok(ParsedSlice::Handled(Slice { service, family, ports, endpoints }))
}

/// An endpoint's hints; none when it has no names in either list.
fn endpoint_hints(hints: Option<&k8s_openapi::api::discovery::v1::EndpointHints>) -> Option<Box<Hints>> {
    let hints = hints?;
    let nodes: Vec<String> = hints.for_nodes.iter().flatten().map(|n| n.name.clone()).collect();
    let zones: Vec<String> = hints.for_zones.iter().flatten().map(|z| z.name.clone()).collect();
    (!nodes.is_empty() || !zones.is_empty()).then(|| Box::new(Hints { nodes, zones }))
}

/// The endpoints of one Service port in one family, each `address:port` once.
pub(crate) fn gather<'a>(
    slices: impl Iterator<Item = &'a Slice>,
    family: Family,
    port_name: &str,
    protocol: Protocol,
) -> BTreeMap<RealServerId, &'a Endpoint> {
    let mut found: BTreeMap<RealServerId, &'a Endpoint> = BTreeMap::new();
    for slice in slices.filter(|s| s.family == family) {
        let Some(port) = slice.ports.iter().find(|p| p.name == port_name && p.protocol == protocol) else {
            continue;
        };
        for e in &slice.endpoints {
            let id = RealServerId { addr: e.addr, port: port.port };
            match found.get(&id) {
                Some(seen) if seen.rank() >= e.rank() => {}
                _ => {
                    found.insert(id, e);
                }
            }
        }
    }
    found
}

/// Where this node is, for topology hints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology<'a> {
    pub node_name: &'a str,
    pub zone: Option<&'a str>,
}

/// Which hints filter the cluster-wide endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintFilter {
    Node,
    Zone,
    None,
}

/// Hints are used only when every ready endpoint carries them and one matches; node hints first.
fn hint_filter(eps: &BTreeMap<RealServerId, &Endpoint>, topo: &Topology) -> HintFilter {
    let ready = || eps.values().filter(|e| e.ready);
    let all_node = ready().all(|e| !e.node_hints().is_empty());
    if all_node && ready().any(|e| e.node_hints().iter().any(|n| n == topo.node_name)) {
        return HintFilter::Node;
    }
    if let Some(zone) = topo.zone {
        let all_zone = ready().all(|e| !e.zone_hints().is_empty());
        if all_zone && ready().any(|e| e.zone_hints().iter().any(|z| z == zone)) {
            return HintFilter::Zone;
        }
    }
    HintFilter::None
}

/// The endpoints a virtual server sends to, in upstream's categories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    /// For `Cluster` policies: ready endpoints (topology-filtered), or if none, the serving and
    /// terminating ones.
    pub cluster: Vec<RealServerId>,
    /// For `Local` policies: ready endpoints on this node, or if none, the serving and
    /// terminating ones on this node.
    pub local: Vec<RealServerId>,
}

/// Categorizes `eps` as upstream's `CategorizeEndpoints` does.
pub(crate) fn select(eps: &BTreeMap<RealServerId, &Endpoint>, topo: &Topology) -> Selection {
    let filter = hint_filter(eps, topo);
    let hinted = |e: &Endpoint| match filter {
        HintFilter::Node => e.node_hints().iter().any(|n| n == topo.node_name),
        HintFilter::Zone => topo.zone.is_some_and(|z| e.zone_hints().iter().any(|h| h == z)),
        HintFilter::None => true,
    };
    let pick = |keep: &dyn Fn(&Endpoint) -> bool| -> Vec<RealServerId> {
        eps.iter().filter(|(_, e)| keep(e)).map(|(id, _)| *id).collect()
    };
    let mut cluster = pick(&|e| e.ready && hinted(e));
    if cluster.is_empty() {
        cluster = pick(&|e| e.serving && e.terminating);
    }
    let mut local = pick(&|e| e.ready && e.local);
    if local.is_empty() {
        local = pick(&|e| e.local && e.serving && e.terminating);
    }
    Selection { cluster, local }
}
