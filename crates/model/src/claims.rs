//! Which Service port gets a virtual server that several claim.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipvs::VirtualServerId;

use crate::changes::Changes;
use crate::desired::{DesiredState, DesiredVirtualServer};
use crate::names::{ServiceKey, ServicePortRef};
use crate::warning::Warning;

/// The desired state plus the claims that lost: for each contested virtual server id, the
/// claim with the smallest [`ServicePortRef`] is desired, whatever the order of updates, so a
/// model updated step by step equals one built from scratch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    pub desired: DesiredState,
    shadowed: HashMap<VirtualServerId, BTreeMap<ServicePortRef, DesiredVirtualServer>>,
}

impl Claims {
    /// Replaces Service `key`'s claims on `old_ids` with `new`; records in `changes` every id
    /// whose desired virtual server changed, and warns about claims that lost.
    pub fn replace(
        &mut self,
        key: &ServiceKey,
        old_ids: &[VirtualServerId],
        new: Vec<DesiredVirtualServer>,
        changes: &mut Changes,
        warnings: &mut Vec<Warning>,
    ) {
        let mut by_id: BTreeMap<VirtualServerId, Vec<DesiredVirtualServer>> = BTreeMap::new();
        for vs in new {
            by_id.entry(vs.server.id).or_default().push(vs);
        }
        let ids: BTreeSet<VirtualServerId> = old_ids.iter().copied().chain(by_id.keys().copied()).collect();
        for id in ids {
            let claims = by_id.remove(&id).unwrap_or_default();
            self.settle(id, key, claims, changes, warnings);
        }
    }

    fn settle(
        &mut self,
        id: VirtualServerId,
        key: &ServiceKey,
        claims: Vec<DesiredVirtualServer>,
        changes: &mut Changes,
        warnings: &mut Vec<Warning>,
    ) {
        // Fast path, the common case: this Service alone claims `id`, once.
        if !self.shadowed.contains_key(&id) && claims.len() <= 1 {
            let current = self.desired.virtual_server(&id);
            if current.is_some_and(|c| &c.origin.service != key) {
                // Another Service holds it: fall through to the general path.
            } else {
                let unchanged = match (current, claims.first()) {
                    (Some(c), Some(n)) => c == n,
                    (None, None) => true,
                    _ => false,
                };
                if !unchanged {
                    self.desired.remove(&id);
                    if let Some(vs) = claims.into_iter().next() {
                        self.desired.insert(vs);
                    }
                    note_change(changes, &id);
                }
                return;
            }
        }

        let before = self.desired.virtual_server(&id).cloned();
        let shadow = self.shadowed.entry(id).or_default();
        shadow.retain(|origin, _| &origin.service != key);
        if before.as_ref().is_some_and(|b| &b.origin.service == key) {
            self.desired.remove(&id);
        }
        for vs in claims {
            shadow.insert(vs.origin.clone(), vs);
        }
        let holder = self.desired.virtual_server(&id).map(|v| v.origin.clone());
        let challenger = shadow.keys().next().cloned();
        match (holder, challenger) {
            (Some(h), Some(c)) if c < h => {
                if let (Some(loser), Some(winner)) = (self.desired.remove(&id), shadow.remove(&c)) {
                    self.desired.insert(winner);
                    shadow.insert(loser.origin.clone(), loser);
                }
            }
            (None, Some(c)) => {
                if let Some(winner) = shadow.remove(&c) {
                    self.desired.insert(winner);
                }
            }
            _ => {}
        }
        if let Some(winner) = self.desired.virtual_server(&id) {
            for origin in shadow.keys() {
                warnings.push(Warning::new(
                    format!("Service {}", origin.service),
                    format!(
                        "virtual server {id} is served by {}; port {:?} left out there",
                        winner.origin, origin.port_name
                    ),
                ));
            }
        }
        if shadow.is_empty() {
            self.shadowed.remove(&id);
        }
        if self.desired.virtual_server(&id) != before.as_ref() {
            note_change(changes, &id);
        }
    }
}

fn note_change(changes: &mut Changes, id: &VirtualServerId) {
    changes.virtual_servers.insert(*id);
    if let Some(addr) = id.addr() {
        changes.addresses.insert(addr);
    }
}
