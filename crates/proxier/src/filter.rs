//! The netfilter side of a sync: what to hand the nftables keeper after each sync, and the
//! trait it is reached through, so that the loop's logic is unit-tested without `nft`.

use model::{Changes, Model};
use netfilter::{FilterState, NftError, ServiceFilter, Target};

use crate::filter_state::{filter_state, filter_updates};

/// What one sync asks of the netfilter side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterWork {
    /// The full reconcile: the sets must hold exactly this (drift behind the proxy's back is
    /// repaired).
    Full(FilterState),
    /// An incremental sync: the new filters of the changed virtual servers only (`None`: gone).
    Only(Vec<(Target, Option<ServiceFilter>)>),
    /// Someone else edited the table: it must be replaced whole (chains and rules too) by one
    /// holding exactly this.
    Rebuild(FilterState),
}

impl FilterWork {
    /// The work for a sync of `model`: everything when `full`, else the virtual servers in
    /// `changes` (cost proportional to them).
    pub fn of(model: &Model, full: bool, changes: &Changes) -> FilterWork {
        if full {
            FilterWork::Full(filter_state(model))
        } else {
            FilterWork::Only(filter_updates(model, &changes.virtual_servers))
        }
    }
}

/// Makes the nftables keeper (e.g. creates or adopts the table); the loop retries it on every
/// sync until it succeeds.
/// It gets the pod CIDRs this node's Node object gives (empty when it gives none), which the
/// keeper may need; not the model, whose lock it would hold while `nft` runs.
pub type FilterStarter = Box<dyn FnMut(&[ipnet::IpNet]) -> Result<Box<dyn Filter>, NftError> + Send>;

/// The nftables keeper the sync loop drives after each sync. A failure is logged by the loop;
/// the keeper repairs itself on the next call.
pub trait Filter: Send {
    /// Applies `work`; returns how many set elements were added or deleted (0: nothing written).
    fn apply(&mut self, work: FilterWork) -> Result<usize, NftError>;

    /// Compares a part of what the kernel holds with what was applied (the next part each
    /// call) and repairs it; returns how many elements it wrote. Called at each verification.
    fn check(&mut self) -> Result<usize, NftError> {
        Ok(0)
    }
}
