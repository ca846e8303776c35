//! The observed state: what the kernel holds, as read back or as last applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipvs::{
    ConnectionCounts, Operation, RealServer, RealServerEntry, RealServerId, Table, VirtualServer, VirtualServerEntry,
    VirtualServerId,
};
use serde::{Deserialize, Serialize};

use crate::plan::Step;

/// A real server as observed, with the connection counters graceful removal waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRealServer {
    /// Its configuration.
    pub server: RealServer,
    /// Its connection counters (zero for one only ever added by [`Observed::apply`]).
    pub connections: ConnectionCounts,
    /// Whether `connections` is a fresh count (a dump, or [`Observed::set_connections`]) rather
    /// than a guess: a real server this proxy added, or one counted by a dump since marked stale
    /// ([`Observed::mark_counters_stale`]). Graceful removal deletes a TCP real server at once
    /// only on a fresh count of 0.
    #[serde(default)]
    pub counted: bool,
}

/// A virtual server as observed, with its real servers by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVirtualServer {
    /// Its configuration (flags may include the kernel's `HASHED` bit).
    pub server: VirtualServer,
    /// Its real servers.
    #[serde(with = "crate::serde_pairs")]
    pub real_servers: BTreeMap<RealServerId, ObservedRealServer>,
}

/// The kernel's IPVS table and the addresses bound on kube-ipvs0, indexed for planning.
///
/// Built from a kernel dump with [`Observed::from_kernel`], then kept current by the daemon with
/// [`Observed::apply`] for every step that succeeded, so that incremental plans need no dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    #[serde(with = "crate::serde_pairs")]
    virtual_servers: BTreeMap<VirtualServerId, ObservedVirtualServer>,
    bound: BTreeSet<IpAddr>,
    /// Virtual servers this proxy created or manages: on an address not bound on kube-ipvs0 (a
    /// node address) nothing else proves them this proxy's, so the plan deletes only these there.
    #[serde(default)]
    ours: BTreeSet<VirtualServerId>,
}

impl Observed {
    /// An empty kernel: no virtual server, nothing bound.
    pub fn new() -> Observed {
        Observed::default()
    }

    /// The state read from the kernel: the whole IPVS `table` (foreign entries included) and the
    /// addresses `bound` on kube-ipvs0.
    pub fn from_kernel(table: &Table, bound: impl IntoIterator<Item = IpAddr>) -> Observed {
        let mut observed =
            Observed { virtual_servers: BTreeMap::new(), bound: bound.into_iter().collect(), ours: BTreeSet::new() };
        for (vs, dests) in &table.services {
            observed.replace_virtual_server(vs, dests);
        }
        observed
    }

    /// Replaces one virtual server and its real servers with a fresh kernel read, e.g. to refresh
    /// the connection counters of real servers being removed gracefully.
    pub fn replace_virtual_server(&mut self, vs: &VirtualServerEntry, dests: &[RealServerEntry]) {
        let real_servers = dests
            .iter()
            .map(|d| (d.server.id, ObservedRealServer { server: d.server, connections: d.connections, counted: true }))
            .collect();
        self.virtual_servers.insert(vs.server.id, ObservedVirtualServer { server: vs.server.clone(), real_servers });
    }

    /// Forgets virtual server `id`, as when the kernel no longer lists it.
    pub fn remove_virtual_server(&mut self, id: &VirtualServerId) {
        self.virtual_servers.remove(id);
    }

    /// Sets the connection counters of one real server; does nothing if it is not observed.
    pub fn set_connections(&mut self, vs: &VirtualServerId, rs: &RealServerId, connections: ConnectionCounts) {
        if let Some(r) = self.virtual_servers.get_mut(vs).and_then(|v| v.real_servers.get_mut(rs)) {
            r.connections = connections;
            r.counted = true;
        }
    }

    /// Marks every connection count stale, as it is once the dump that read it is older than the
    /// sync that used it: the sync loop calls this after each sync.
    pub fn mark_counters_stale(&mut self) {
        for r in self.virtual_servers.values_mut().flat_map(|v| v.real_servers.values_mut()) {
            r.counted = false;
        }
    }

    /// Records that `addr` is bound on kube-ipvs0 (`true`) or not (`false`).
    pub fn set_bound(&mut self, addr: IpAddr, bound: bool) {
        if bound {
            self.bound.insert(addr);
        } else {
            self.bound.remove(&addr);
        }
    }

    /// Records the effect of a step the kernel accepted. Counters of surviving real servers are
    /// kept; a real server added here starts with none. A step on a virtual server not observed
    /// is ignored, as the kernel would have refused it.
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::Bind(addr) => self.set_bound(*addr, true),
            Step::Unbind(addr) => self.set_bound(*addr, false),
            Step::Kernel(op) => self.apply_operation(op),
        }
    }

    fn apply_operation(&mut self, op: &Operation) {
        match op {
            Operation::AddVirtualServer(vs) => {
                self.ours.insert(vs.id);
                self.virtual_servers
                    .entry(vs.id)
                    .and_modify(|o| o.server = vs.clone())
                    .or_insert_with(|| ObservedVirtualServer { server: vs.clone(), real_servers: BTreeMap::new() });
            }
            Operation::UpdateVirtualServer(vs) => {
                if let Some(o) = self.virtual_servers.get_mut(&vs.id) {
                    o.server = vs.clone();
                }
            }
            Operation::DeleteVirtualServer(id) => {
                self.virtual_servers.remove(id);
                self.ours.remove(id);
            }
            Operation::AddRealServer(id, rs) | Operation::UpdateRealServer(id, rs) => {
                if let Some(o) = self.virtual_servers.get_mut(id) {
                    o.real_servers.entry(rs.id).and_modify(|r| r.server = *rs).or_insert(ObservedRealServer {
                        server: *rs,
                        connections: ConnectionCounts::default(),
                        counted: false,
                    });
                }
            }
            Operation::DeleteRealServer(id, rs) => {
                if let Some(o) = self.virtual_servers.get_mut(id) {
                    o.real_servers.remove(rs);
                }
            }
        }
    }

    /// All observed virtual servers, ordered by id.
    pub fn virtual_servers(&self) -> impl ExactSizeIterator<Item = (&VirtualServerId, &ObservedVirtualServer)> {
        self.virtual_servers.iter()
    }

    /// Observed virtual server `id`, if any.
    pub fn virtual_server(&self, id: &VirtualServerId) -> Option<&ObservedVirtualServer> {
        self.virtual_servers.get(id)
    }

    /// The addresses bound on kube-ipvs0, ordered.
    pub fn bound(&self) -> impl ExactSizeIterator<Item = &IpAddr> {
        self.bound.iter()
    }

    /// Whether `addr` is bound on kube-ipvs0.
    pub fn is_bound(&self, addr: &IpAddr) -> bool {
        self.bound.contains(addr)
    }

    /// Records `ids` as this proxy's: virtual servers it made before a restart (kept in a file
    /// that lives as long as the kernel's table) or that it manages now. Returns how many were
    /// not recorded yet.
    pub fn claim(&mut self, ids: impl IntoIterator<Item = VirtualServerId>) -> usize {
        ids.into_iter().filter(|id| self.ours.insert(*id)).count()
    }

    /// Claims every virtual server that is both desired and observed: this proxy manages it
    /// from now on (an adopted one included), so it may delete it once it is no longer desired.
    /// Returns how many were not recorded yet.
    pub fn claim_desired(&mut self, desired: &crate::DesiredState) -> usize {
        let managed: Vec<VirtualServerId> =
            desired.virtual_servers().map(|(id, _)| *id).filter(|id| self.virtual_servers.contains_key(id)).collect();
        self.claim(managed)
    }

    /// Every virtual server recorded as this proxy's.
    pub fn ours(&self) -> impl ExactSizeIterator<Item = &VirtualServerId> {
        self.ours.iter()
    }

    /// Whether virtual server `id` was created or claimed by this proxy.
    pub fn is_ours(&self, id: &VirtualServerId) -> bool {
        self.ours.contains(id)
    }

    /// This proxy's virtual servers on addresses not bound on kube-ipvs0 (node addresses):
    /// what a restart must be told, as nothing in the kernel proves them this proxy's.
    pub fn ours_unbound(&self) -> impl Iterator<Item = &VirtualServerId> {
        self.ours.iter().filter(|id| id.addr().is_some_and(|a| !self.bound.contains(&a)))
    }
}
