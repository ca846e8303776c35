//! The filter state: what the proxy's nftables sets should hold, per virtual server, and the
//! element changes that take the kernel from one state to another.
//!
//! Several virtual servers may need the same set element (a ClusterIP and a NodePort share
//! their endpoints, so their hairpin elements are equal; two ports of one ClusterIP both need
//! the address in the bound set). Elements are therefore counted: an element is added when its
//! first user appears and deleted when its last one goes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::{Family, Protocol};

/// An address, protocol and port that traffic is sent to: a virtual server's, or an endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The destination address.
    pub addr: IpAddr,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
}

impl Target {
    /// `addr`, `protocol`, `port` as a target.
    pub fn new(addr: IpAddr, protocol: Protocol, port: u16) -> Target {
        Target { addr, protocol, port }
    }

    /// The family of its address.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }
}

impl fmt::Display for Target {
    /// `TCP 10.96.0.10:80`, `UDP [fd00::10]:53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{} {a}:{}", self.protocol, self.port),
            IpAddr::V6(a) => write!(f, "{} [{a}]:{}", self.protocol, self.port),
        }
    }
}

/// Keeps the outermost prefixes only, ordered: prefixes either nest or are disjoint, so the
/// result is disjoint, as the kernel's interval sets require (they refuse overlapping elements).
/// Host bits are cleared first.
pub fn disjoint_prefixes(prefixes: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let all: BTreeSet<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
    all.iter().filter(|p| !all.iter().any(|q| q != *p && q.contains(*p))).copied().collect()
}

/// Which traffic to a virtual server is masqueraded after IPVS forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MasqueradeRule {
    /// All of it.
    All,
    /// Traffic whose source is outside the cluster prefixes of the [`FilterConfig`](super::FilterConfig).
    OutsideClusterPrefixes,
    /// None: the backends see the client's address.
    None,
}

/// What the filter needs to know about one virtual server (a [`Target`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceFilter {
    /// Which of its traffic is masqueraded.
    pub masquerade: MasqueradeRule,
    /// Whether its address is bound on kube-ipvs0: new connections to a bound address are
    /// rejected unless their protocol and port are a bound virtual server's.
    pub bound: bool,
    /// The sources allowed to reach it; empty: any source.
    pub source_ranges: Vec<IpNet>,
    /// Its endpoints on this node (address, port), of its own family: traffic from one of them
    /// to itself (hairpin) is masqueraded. Endpoints elsewhere cannot hairpin here.
    pub local_endpoints: BTreeSet<(IpAddr, u16)>,
    /// Where traffic to it from inside the cluster (the cluster prefixes, the node itself) is
    /// sent instead: another target's address and port of the same family and protocol.
    pub short_circuit: Option<(IpAddr, u16)>,
}

/// One element of one of the proxy's sets; the set is named by the variant and the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Element {
    /// Traffic to the target is always masqueraded.
    MasqueradeAll(Target),
    /// Traffic to the target from outside the cluster prefixes is masqueraded.
    MasqueradeOutside(Target),
    /// An address bound on kube-ipvs0.
    Bound(IpAddr),
    /// A virtual server on a bound address: not rejected.
    ServicePort(Target),
    /// A virtual server only some sources may reach.
    SourceRestricted(Target),
    /// A source prefix allowed to reach a restricted virtual server.
    SourceAllowed(Target, IpNet),
    /// A local endpoint: traffic from its address to itself is masqueraded.
    Hairpin(Target),
    /// A target whose in-cluster traffic is sent elsewhere (the key of [`Element::ShortCircuit`]).
    ShortCircuitKey(Target),
    /// In-cluster traffic to the target goes to this address and port instead.
    ShortCircuit(Target, IpAddr, u16),
}

impl Element {
    /// The family of the set the element belongs to.
    pub fn family(&self) -> Family {
        match self {
            Element::Bound(addr) => Family::of(addr),
            Element::MasqueradeAll(t)
            | Element::MasqueradeOutside(t)
            | Element::ServicePort(t)
            | Element::SourceRestricted(t)
            | Element::SourceAllowed(t, _)
            | Element::Hairpin(t)
            | Element::ShortCircuitKey(t)
            | Element::ShortCircuit(t, ..) => t.family(),
        }
    }
}

/// Element adds and deletes, each element at most once and never in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementChanges {
    /// Elements to add.
    pub added: BTreeSet<Element>,
    /// Elements to delete.
    pub removed: BTreeSet<Element>,
}

impl ElementChanges {
    /// No change.
    pub fn new() -> ElementChanges {
        ElementChanges::default()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// The number of element adds and deletes.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    /// Records that `element` must now be present; cancels a pending delete of it.
    fn add(&mut self, element: Element) {
        if !self.removed.remove(&element) {
            self.added.insert(element);
        }
    }

    /// Records that `element` must now be absent; cancels a pending add of it.
    fn remove(&mut self, element: Element) {
        if !self.added.remove(&element) {
            self.removed.insert(element);
        }
    }
}

/// The filter state: a [`ServiceFilter`] per virtual server, and the set elements they need,
/// counted by user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterState {
    services: BTreeMap<Target, ServiceFilter>,
    elements: BTreeMap<Element, u32>,
}

impl FilterState {
    /// An empty state: no virtual server, every set empty.
    pub fn new() -> FilterState {
        FilterState::default()
    }

    /// A state holding `services`; a later entry for the same target replaces an earlier one.
    pub fn from_services(services: impl IntoIterator<Item = (Target, ServiceFilter)>) -> FilterState {
        // Built in bulk, not entry by entry: maps filled in order keep their nodes half full,
        // and every full sync builds a whole state (a cold start keeps it as the applied one).
        let services: BTreeMap<Target, ServiceFilter> = services.into_iter().collect();
        let mut all: Vec<Element> = services.iter().flat_map(|(t, f)| elements_of(t, f)).collect();
        all.sort_unstable();
        // Each run of equal elements is one element counted by its users.
        let elements = all.chunk_by(|a, b| a == b).map(|run| (run[0], run.len() as u32)).collect();
        FilterState { services, elements }
    }

    /// Sets (`Some`) or removes (`None`) the filter of `target` and returns the element changes
    /// this makes: only elements whose last user went or whose first user came.
    pub fn set(&mut self, target: Target, filter: Option<ServiceFilter>) -> ElementChanges {
        let mut changes = ElementChanges::new();
        if let Some(old) = self.services.remove(&target) {
            for element in elements_of(&target, &old) {
                if let Some(n) = self.elements.get_mut(&element) {
                    *n -= 1;
                    if *n == 0 {
                        self.elements.remove(&element);
                        changes.remove(element);
                    }
                }
            }
        }
        if let Some(new) = filter {
            for element in elements_of(&target, &new) {
                let n = self.elements.entry(element).or_insert(0);
                *n += 1;
                if *n == 1 {
                    changes.add(element);
                }
            }
            self.services.insert(target, new);
        }
        changes
    }

    /// Applies [`FilterState::set`] to each entry and returns all their changes merged.
    pub fn update(&mut self, entries: impl IntoIterator<Item = (Target, Option<ServiceFilter>)>) -> ElementChanges {
        let mut all = ElementChanges::new();
        for (target, filter) in entries {
            let changes = self.set(target, filter);
            changes.removed.into_iter().for_each(|e| all.remove(e));
            changes.added.into_iter().for_each(|e| all.add(e));
        }
        all
    }

    /// The filter of `target`, if it has one.
    pub fn service(&self, target: &Target) -> Option<&ServiceFilter> {
        self.services.get(target)
    }

    /// Every virtual server's filter, ordered by target.
    pub fn services(&self) -> impl ExactSizeIterator<Item = (&Target, &ServiceFilter)> {
        self.services.iter()
    }

    /// The number of virtual servers.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no virtual server.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Every element the sets must hold, ordered.
    pub fn elements(&self) -> impl ExactSizeIterator<Item = &Element> {
        self.elements.keys()
    }

    /// The element changes that turn the sets of `self` into those of `other`.
    pub fn diff(&self, other: &FilterState) -> ElementChanges {
        ElementChanges {
            added: other.elements.keys().filter(|e| !self.elements.contains_key(e)).copied().collect(),
            removed: self.elements.keys().filter(|e| !other.elements.contains_key(e)).copied().collect(),
        }
    }
}

/// The elements one virtual server needs.
fn elements_of(target: &Target, filter: &ServiceFilter) -> Vec<Element> {
    let mut out = Vec::new();
    match filter.masquerade {
        MasqueradeRule::All => out.push(Element::MasqueradeAll(*target)),
        MasqueradeRule::OutsideClusterPrefixes => out.push(Element::MasqueradeOutside(*target)),
        MasqueradeRule::None => {}
    }
    if filter.bound {
        out.push(Element::Bound(target.addr));
        out.push(Element::ServicePort(*target));
    }
    let ranges: Vec<IpNet> =
        filter.source_ranges.iter().filter(|p| prefix_family(p) == target.family()).copied().collect();
    // Ranges are per family, as upstream filters them: a virtual server none of whose ranges is
    // of its family is not restricted (the caller warns about such a Service).
    if !ranges.is_empty() {
        out.push(Element::SourceRestricted(*target));
        // Allowed sources are kept per protocol, for the three a Service has; any other
        // restricted protocol (none comes from the model) admits no source.
        if matches!(target.protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp) {
            out.extend(disjoint_prefixes(ranges).into_iter().map(|p| Element::SourceAllowed(*target, p)));
        }
    }
    if let Some((addr, port)) = filter.short_circuit.filter(|(a, _)| Family::of(a) == target.family()) {
        out.push(Element::ShortCircuitKey(*target));
        out.push(Element::ShortCircuit(*target, addr, port));
    }
    out.extend(
        filter
            .local_endpoints
            .iter()
            .filter(|(addr, _)| Family::of(addr) == target.family())
            .map(|(addr, port)| Element::Hairpin(Target::new(*addr, target.protocol, *port))),
    );
    out
}

/// The family of a prefix.
pub(crate) fn prefix_family(prefix: &IpNet) -> Family {
    match prefix {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}
