//! The plan: ordered kernel and link operations taking the observed state to the desired one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipvs::{Operation, Protocol, RealServer, VirtualServer, VirtualServerId};
use serde::{Deserialize, Serialize};

use crate::changes::Scope;
use crate::config::Config;
use crate::desired::{DesiredState, DesiredVirtualServer};
use crate::graceful::GracefulRemovals;
use crate::observed::{Observed, ObservedVirtualServer};
use ipnet::IpNet;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Add the address to kube-ipvs0.
    Bind(IpAddr),
    /// One IPVS write.
    Kernel(Operation),
    /// Remove the address from kube-ipvs0.
    Unbind(IpAddr),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Bind(a) => write!(f, "bind {a} to kube-ipvs0"),
            Step::Kernel(op) => op.fmt(f),
            Step::Unbind(a) => write!(f, "unbind {a} from kube-ipvs0"),
        }
    }
}

/// Ordered steps: all binds, then kernel operations (a virtual server before its real servers),
/// then all unbinds. The executor runs them in order, contiguous `Kernel` steps as one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, in the order to run them.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The virtual servers some step writes to, ordered.
    pub fn touched_virtual_servers(&self) -> BTreeSet<VirtualServerId> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel(op) => Some(operation_target(op)),
                _ => None,
            })
            .collect()
    }
}

/// The virtual server an operation writes to.
pub fn operation_target(op: &Operation) -> VirtualServerId {
    match op {
        Operation::AddVirtualServer(v) | Operation::UpdateVirtualServer(v) => v.id,
        Operation::DeleteVirtualServer(id)
        | Operation::AddRealServer(id, _)
        | Operation::UpdateRealServer(id, _)
        | Operation::DeleteRealServer(id, _) => *id,
    }
}

/// What the plan may touch and how long graceful removal lasts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// Never touched, desired or not.
    pub exclude_cidrs: Vec<IpNet>,
    /// How long a removed TCP real server with connections stays at weight 0 before deletion.
    pub graceful_termination: Duration,
}

impl PlanPolicy {
    /// The policy of `config`.
    pub fn from_config(config: &Config) -> PlanPolicy {
        PlanPolicy { exclude_cidrs: config.exclude_cidrs.clone(), graceful_termination: config.graceful_termination }
    }

    fn excluded(&self, addr: &IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|c| c.contains(addr))
    }

    /// Whether the plan may delete observed virtual server `id` when it is not desired: a tuple
    /// virtual server outside the excluded prefixes, on an address bound (or to be bound) on
    /// kube-ipvs0, or one this proxy created or manages ([`Observed::is_ours`]). On a node
    /// address the kernel cannot tell this proxy's NodePort from an operator's virtual server:
    /// only the record says. Firewall-mark virtual servers are never this proxy's.
    pub fn owns(&self, id: &VirtualServerId, desired: &DesiredState, observed: &Observed) -> bool {
        // A protocol the proxy never programs is someone else's, wherever it listens.
        if let VirtualServerId::Tuple { protocol: Protocol::Other(_), .. } = id {
            return false;
        }
        match id.addr() {
            Some(addr) => {
                (observed.is_bound(&addr) || desired.wants_address(&addr) || observed.is_ours(id))
                    && !self.excluded(&addr)
            }
            None => false,
        }
    }
}

/// The steps that take `observed` to `desired` within `scope`.
///
/// Contract: virtual servers are updated in place when only scheduler, flags, timeout or netmask
/// differ, real servers when only weight, forwarding or thresholds differ. A TCP real server no
/// longer desired that still has connections, or whose counters are not fresh
/// ([`ObservedRealServer::counted`](crate::ObservedRealServer::counted)), is set to weight 0 and
/// recorded in `graceful`; it is deleted by a later plan once a fresh count says 0 or `policy.graceful_termination` has
/// passed since `now` first saw it pending. UDP and SCTP ones are deleted at once. Real servers
/// pending in `graceful` are looked at when their virtual server is in the scope (the caller
/// puts them there when it has fresh counts or time may be up). Observed virtual servers not
/// desired are deleted only if `policy` owns them; in excluded prefixes nothing is deleted or
/// unbound, but desired entries are created and updated as anywhere else (upstream's rule).
pub fn plan(
    desired: &DesiredState,
    observed: &Observed,
    policy: &PlanPolicy,
    scope: &Scope,
    graceful: &mut GracefulRemovals,
    now: Duration,
) -> Plan {
    let (ids, addrs): (BTreeSet<VirtualServerId>, BTreeSet<IpAddr>) = match scope {
        Scope::All => (
            desired.virtual_servers().map(|(id, _)| *id).chain(observed.virtual_servers().map(|(id, _)| *id)).collect(),
            desired.addresses().chain(observed.bound()).copied().collect(),
        ),
        Scope::Only(changes) => {
            let ids: BTreeSet<VirtualServerId> = changes.virtual_servers.iter().copied().collect();
            let addrs = changes.addresses.iter().copied().chain(ids.iter().filter_map(|id| id.addr())).collect();
            (ids, addrs)
        }
    };

    let mut steps = Vec::new();
    for addr in &addrs {
        if desired.wants_address(addr) && !observed.is_bound(addr) {
            steps.push(Step::Bind(*addr));
        }
    }
    for id in &ids {
        // Firewall-mark virtual servers are never this proxy's. Excluded prefixes are not
        // skipped here: as upstream, they only keep entries from deletion (`policy.owns`).
        if id.addr().is_none() {
            graceful.finish_all(id);
            continue;
        }
        match (desired.virtual_server(id), observed.virtual_server(id)) {
            (Some(d), None) => {
                graceful.finish_all(id);
                steps.push(Step::Kernel(Operation::AddVirtualServer(d.server.clone())));
                for rs in d.real_server_configs() {
                    steps.push(Step::Kernel(Operation::AddRealServer(*id, rs)));
                }
            }
            (Some(d), Some(o)) => plan_virtual_server(d, o, policy, graceful, now, &mut steps),
            (None, Some(_)) => {
                graceful.finish_all(id);
                if policy.owns(id, desired, observed) {
                    steps.push(Step::Kernel(Operation::DeleteVirtualServer(*id)));
                }
            }
            (None, None) => graceful.finish_all(id),
        }
    }
    for addr in &addrs {
        if !desired.wants_address(addr) && observed.is_bound(addr) && !policy.excluded(addr) {
            steps.push(Step::Unbind(*addr));
        }
    }
    Plan { steps }
}

/// Steps for a virtual server both desired and observed.
fn plan_virtual_server(
    d: &DesiredVirtualServer,
    o: &ObservedVirtualServer,
    policy: &PlanPolicy,
    graceful: &mut GracefulRemovals,
    now: Duration,
    steps: &mut Vec<Step>,
) {
    let id = d.server.id;
    if !same_config(&d.server, &o.server) {
        steps.push(Step::Kernel(Operation::UpdateVirtualServer(d.server.clone())));
    }
    // Removals first, so that a destination's slot is free before its replacement arrives.
    let tcp = matches!(id, VirtualServerId::Tuple { protocol: Protocol::Tcp, .. });
    for rs in &o.real_servers {
        let rs_id = &rs.server.id;
        if d.real_servers.contains_key(rs_id) {
            continue;
        }
        // Only a fresh count of 0 proves a TCP real server idle: one this proxy added since the
        // last dump, or counted by a dump now stale, may carry connections nobody has counted.
        if tcp && (rs.connections.total() > 0 || !rs.counted) {
            let since = graceful.start(id, *rs_id, now);
            if now.saturating_sub(since) >= policy.graceful_termination {
                graceful.finish(&id, rs_id);
                steps.push(Step::Kernel(Operation::DeleteRealServer(id, *rs_id)));
            } else if rs.server.weight != 0 {
                steps.push(Step::Kernel(Operation::UpdateRealServer(id, RealServer { weight: 0, ..rs.server })));
            }
        } else {
            graceful.finish(&id, rs_id);
            steps.push(Step::Kernel(Operation::DeleteRealServer(id, *rs_id)));
        }
    }
    for rs in d.real_server_configs() {
        let rs_id = &rs.id;
        graceful.finish(&id, rs_id);
        match o.real_servers.get(rs_id) {
            None => steps.push(Step::Kernel(Operation::AddRealServer(id, rs))),
            // A weight left at 0 by an earlier graceful removal (or by upstream before a restart)
            // differs from the desired weight and is restored here: upstream issue 92019.
            Some(seen) if seen.server != rs => steps.push(Step::Kernel(Operation::UpdateRealServer(id, rs))),
            Some(_) => {}
        }
    }
}

/// Whether two virtual server configurations agree on everything a client sets.
pub(crate) fn same_config(a: &VirtualServer, b: &VirtualServer) -> bool {
    a.scheduler == b.scheduler
        && a.flags.settable() == b.flags.settable()
        && a.timeout == b.timeout
        && a.netmask == b.netmask
        && a.pe_name == b.pe_name
}
