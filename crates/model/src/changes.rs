//! What changed in the desired state, so a plan can look at that part only.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipvs::VirtualServerId;
use serde::{Deserialize, Serialize};

/// The virtual servers and addresses whose desired state may have changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Virtual servers added, changed or removed.
    pub virtual_servers: BTreeSet<VirtualServerId>,
    /// Addresses that started or stopped being wanted on kube-ipvs0.
    pub addresses: BTreeSet<IpAddr>,
}

impl Changes {
    /// No change.
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.virtual_servers.is_empty() && self.addresses.is_empty()
    }

    /// Adds `other` to these changes (e.g. to retry changes whose plan failed).
    pub fn merge(&mut self, other: Changes) {
        self.virtual_servers.extend(other.virtual_servers);
        self.addresses.extend(other.addresses);
    }
}

/// Which part of the state a plan compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Everything desired and everything observed: the periodic full reconcile.
    All,
    /// Only these changes (plus real servers pending graceful removal): the incremental path,
    /// whose cost is proportional to the change.
    Only(Changes),
}
