//! Real servers being removed gracefully: at weight 0, waiting for their connections to end.

use std::collections::BTreeMap;
use std::time::Duration;

use ipvs::{RealServerId, VirtualServerId};
use serde::{Deserialize, Serialize};

/// The TCP real servers the plan has set to weight 0 instead of deleting, with when that began.
///
/// Kept by the daemon across plans; the plan adds to it and removes from it. Time is whatever
/// monotonic clock the caller uses, as a [`Duration`] since its own epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRemovals {
    #[serde(with = "crate::serde_pairs")]
    started: BTreeMap<(VirtualServerId, RealServerId), Duration>,
}

impl GracefulRemovals {
    /// None pending.
    pub fn new() -> GracefulRemovals {
        GracefulRemovals::default()
    }

    /// How many real servers are pending removal.
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    /// Whether real server `rs` of `vs` is pending removal.
    pub fn contains(&self, vs: &VirtualServerId, rs: &RealServerId) -> bool {
        self.started.contains_key(&(*vs, *rs))
    }

    /// The pending real servers with when their removal began, ordered.
    pub fn iter(&self) -> impl Iterator<Item = (&VirtualServerId, &RealServerId, Duration)> {
        self.started.iter().map(|((v, r), t)| (v, r, *t))
    }

    /// Marks `rs` pending from `now` unless it already is; returns when its removal began.
    pub(crate) fn start(&mut self, vs: VirtualServerId, rs: RealServerId, now: Duration) -> Duration {
        *self.started.entry((vs, rs)).or_insert(now)
    }

    /// Forgets `rs` (deleted, or desired again).
    pub(crate) fn finish(&mut self, vs: &VirtualServerId, rs: &RealServerId) {
        self.started.remove(&(*vs, *rs));
    }

    /// Forgets every real server of `vs`.
    pub(crate) fn finish_all(&mut self, vs: &VirtualServerId) {
        self.started.retain(|(v, _), _| v != vs);
    }
}
