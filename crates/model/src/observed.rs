//! The observed state: what the kernel holds, as read back or as last applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipvs::{
    ConnectionCounts, Family, Operation, Protocol, RealServer, RealServerEntry, RealServerId, Table, VirtualServer,
    VirtualServerEntry, VirtualServerId,
};
use serde::{Deserialize, Serialize};

use crate::plan::Step;
use crate::real_servers::RealServers;

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
    pub real_servers: RealServers<ObservedRealServer>,
}

/// What [`Observed::verify_virtual_servers`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedVirtualServers {
    /// Virtual servers with another configuration in the kernel (now the record's): to plan again.
    pub altered: Vec<VirtualServerId>,
    /// Virtual servers observed but not listed, left in the record: gone, or skipped by the dump
    /// (IPVS resumes a dump by position in a table all network namespaces share, so writes
    /// meanwhile can make it skip an entry). Each is to be read back before it is believed gone
    /// ([`Observed::verify_virtual_server`]).
    pub missing: Vec<VirtualServerId>,
    /// Virtual servers in the kernel that were not observed: their real servers are to be read.
    pub unknown: Vec<VirtualServerId>,
}

/// The kernel's IPVS table and the addresses bound on kube-ipvs0, indexed for planning.
///
/// Built from a kernel dump with [`Observed::from_kernel`], then kept current by the daemon with
/// [`Observed::apply`] for every step that succeeded, so that incremental plans need no dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Boxed, as in [`crate::DesiredState`]: the map's half-empty nodes then cost pointers.
    #[serde(with = "crate::serde_pairs")]
    virtual_servers: BTreeMap<VirtualServerId, Box<ObservedVirtualServer>>,
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
            .map(|d| ObservedRealServer { server: d.server, connections: d.connections, counted: true })
            .collect();
        self.virtual_servers
            .insert(vs.server.id, Box::new(ObservedVirtualServer { server: vs.server.clone(), real_servers }));
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
                self.virtual_servers.entry(vs.id).and_modify(|o| o.server = vs.clone()).or_insert_with(|| {
                    Box::new(ObservedVirtualServer { server: vs.clone(), real_servers: RealServers::new() })
                });
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
                    match o.real_servers.get_mut(&rs.id) {
                        Some(r) => r.server = *rs,
                        None => {
                            o.real_servers.insert(ObservedRealServer {
                                server: *rs,
                                connections: ConnectionCounts::default(),
                                counted: false,
                            });
                        }
                    }
                }
            }
            Operation::DeleteRealServer(id, rs) => {
                if let Some(o) = self.virtual_servers.get_mut(id) {
                    o.real_servers.remove(rs);
                }
            }
        }
    }

    /// Takes in the kernel's list of virtual servers (a verification read), except those
    /// `written` says were written since the read began (the read may predate the write).
    /// One whose configuration differs (as the plan compares it) takes the kernel's and is
    /// returned in `altered`; one not listed is kept and returned in `missing` (a dump is no
    /// proof of absence). One the kernel holds that is not observed (someone else made it) is
    /// returned in `unknown` and left out until its real servers are read
    /// ([`Observed::verify_real_servers`]).
    pub fn verify_virtual_servers(
        &mut self,
        listed: &[VirtualServer],
        written: impl Fn(&VirtualServerId) -> bool,
    ) -> VerifiedVirtualServers {
        let mut verified = VerifiedVirtualServers::default();
        for server in listed {
            let id = server.id;
            if written(&id) {
                continue;
            }
            match self.virtual_servers.get_mut(&id) {
                None => verified.unknown.push(id),
                Some(o) if !crate::plan::same_config(&o.server, server) => {
                    o.server = server.clone();
                    verified.altered.push(id);
                }
                Some(_) => {}
            }
        }
        // What was not listed: the listed ids sorted, rather than a set of them (at 10,000 a
        // tree of ids was over half a megabyte more for the moment of this check).
        let mut seen: Vec<VirtualServerId> = listed.iter().map(|s| s.id).collect();
        seen.sort_unstable();
        verified.missing =
            self.virtual_servers.keys().filter(|id| seen.binary_search(id).is_err() && !written(id)).copied().collect();
        verified
    }

    /// Takes in a read of one virtual server and its real servers made right before planning
    /// (fresh counts): the record takes the kernel's configuration and real servers. Returns
    /// whether they differed from the record (as the plan compares them), or it was not observed.
    pub fn verify_virtual_server(&mut self, vs: &VirtualServerEntry, dests: &[RealServerEntry]) -> bool {
        let config_differs = match self.virtual_servers.get_mut(&vs.server.id) {
            Some(o) => {
                let differs = !crate::plan::same_config(&o.server, &vs.server);
                o.server = vs.server.clone();
                differs
            }
            None => true,
        };
        let real_servers_differ = self.verify_real_servers(&vs.server, dests, true);
        config_differs || real_servers_differ
    }

    /// Takes in a fresh read of the real servers of `vs` (a verification read); returns whether
    /// their configuration differed from what was observed (then the read replaces it). The
    /// counters are taken, as fresh, only with `counted` (a read made to plan with): a
    /// verification read ages while it waits, and graceful removal must not trust an old 0.
    /// A virtual server not observed is added with `server` as its configuration.
    pub fn verify_real_servers(&mut self, server: &VirtualServer, dests: &[RealServerEntry], counted: bool) -> bool {
        let fresh = |d: &RealServerEntry| ObservedRealServer { server: d.server, connections: d.connections, counted };
        let Some(o) = self.virtual_servers.get_mut(&server.id) else {
            let real_servers = dests.iter().map(fresh).collect();
            self.virtual_servers
                .insert(server.id, Box::new(ObservedVirtualServer { server: server.clone(), real_servers }));
            return true;
        };
        let same = o.real_servers.len() == dests.len()
            && dests.iter().all(|d| o.real_servers.get(&d.server.id).is_some_and(|r| r.server == d.server));
        if same {
            // Only a count made for planning replaces the one held: an older read must not
            // take back the freshness of a newer count (it leaves counts as they were).
            for d in dests.iter().filter(|_| counted) {
                if let Some(r) = o.real_servers.get_mut(&d.server.id) {
                    r.connections = d.connections;
                    r.counted = true;
                }
            }
        } else {
            o.real_servers = dests.iter().map(fresh).collect();
        }
        !same
    }

    /// Takes in the kernel's list of the addresses bound on kube-ipvs0 (a verification read),
    /// except those `written` says were bound or unbound since the read began; returns the
    /// addresses whose state differed.
    pub fn verify_bound(&mut self, listed: &[IpAddr], written: impl Fn(&IpAddr) -> bool) -> Vec<IpAddr> {
        let listed: BTreeSet<IpAddr> = listed.iter().copied().collect();
        let differ: Vec<IpAddr> = listed.symmetric_difference(&self.bound).filter(|a| !written(a)).copied().collect();
        for addr in &differ {
            self.set_bound(*addr, listed.contains(addr));
        }
        differ
    }

    /// Marks the connection counts of the real servers of `ids` stale (see
    /// [`Observed::mark_counters_stale`]), in time proportional to them.
    pub fn mark_counters_stale_of<'a>(&mut self, ids: impl IntoIterator<Item = &'a VirtualServerId>) {
        for id in ids {
            if let Some(v) = self.virtual_servers.get_mut(id) {
                v.real_servers.values_mut().for_each(|r| r.counted = false);
            }
        }
    }

    /// All observed virtual servers, ordered by id.
    pub fn virtual_servers(&self) -> impl ExactSizeIterator<Item = (&VirtualServerId, &ObservedVirtualServer)> {
        self.virtual_servers.iter().map(|(id, vs)| (id, &**vs))
    }

    /// How many observed virtual servers are IPv4 and how many IPv6. Costs the IPv6 ones (and
    /// any of a protocol the kernel named by number), not all: ids order by protocol, then
    /// address, IPv4 before IPv6, so each protocol's IPv6 ids are one range of the map.
    pub fn count_by_family(&self) -> (usize, usize) {
        use std::net::Ipv6Addr;
        let mut ipv6 = 0;
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let first = VirtualServerId::Tuple { protocol, addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), port: 0 };
            let last = VirtualServerId::Tuple { protocol, addr: IpAddr::V6(Ipv6Addr::from(u128::MAX)), port: u16::MAX };
            ipv6 += self.virtual_servers.range(first..=last).count();
        }
        let first_other = VirtualServerId::Tuple {
            protocol: Protocol::Other(0),
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 0,
        };
        let first_fwmark = VirtualServerId::Fwmark { family: Family::V4, mark: 0 };
        ipv6 +=
            self.virtual_servers.range(first_other..first_fwmark).filter(|(id, _)| id.family() == Family::V6).count();
        ipv6 += self.virtual_servers.range(VirtualServerId::Fwmark { family: Family::V6, mark: 0 }..).count();
        (self.virtual_servers.len() - ipv6, ipv6)
    }

    /// Observed virtual server `id`, if any.
    pub fn virtual_server(&self, id: &VirtualServerId) -> Option<&ObservedVirtualServer> {
        self.virtual_servers.get(id).map(|vs| &**vs)
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
