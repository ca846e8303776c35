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

    /// What the sets hold, when the keeper knows it: a round's sweep then compares each
    /// virtual server's filter with it and hands over only those that differ, as a
    /// [`FilterWork::Only`], instead of building a whole second state. `None` (the default): the
    /// sweep is a [`FilterWork::Full`].
    fn known(&self) -> Option<&FilterState> {
        None
    }

    /// The digest of element set `set` as applied, to compare with the kernel's as the
    /// verification reads it ([`crate::KernelReader::filter_set`]); `None` when unknown (the
    /// set is then not checked).
    fn set_digest(&self, _set: &str) -> Option<u64> {
        None
    }

    /// The nftables generation (the kernel's count of committed transactions) read right after
    /// the keeper's first whole write, or its adoption of the table as it was; `None` when
    /// unknown. Asked after each whole write; the first answer counts (see
    /// [`crate::Shared::filter_settled`]).
    fn settled_generation(&self) -> Option<u32> {
        None
    }

    /// Compares set `set` with what the kernel holds, element by element, and writes the
    /// difference; returns how many elements it wrote. Called when the digests differed.
    fn repair_set(&mut self, _set: &str) -> Result<usize, NftError> {
        Ok(0)
    }
}
