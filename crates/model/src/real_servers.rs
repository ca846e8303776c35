//! A virtual server's real servers: ordered by id, in one allocation sized to them.
//!
//! At 10,000 Services a map per virtual server was most of the model's memory: a `BTreeMap`
//! node holds eleven keys and values whatever it uses, and the key repeats what the value
//! already holds. A sorted vector keyed by the value's own id holds only what is there.

use ipvs::{RealServer, RealServerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::observed::ObservedRealServer;

/// What a [`RealServers`] holds: something that names its real server.
pub trait RealServerKey {
    /// The id of the real server it is.
    fn real_server_id(&self) -> RealServerId;
}

impl RealServerKey for RealServerId {
    fn real_server_id(&self) -> RealServerId {
        *self
    }
}

impl RealServerKey for RealServer {
    fn real_server_id(&self) -> RealServerId {
        self.id
    }
}

impl RealServerKey for ObservedRealServer {
    fn real_server_id(&self) -> RealServerId {
        self.server.id
    }
}

/// Sets smaller than this grow one slot at a time and shrink to their size.
const EXACT_GROWTH_BELOW: usize = 32;

/// Real servers by id, at most one per id, iterated in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServers<T>(Vec<T>);

impl<T> Default for RealServers<T> {
    fn default() -> Self {
        RealServers(Vec::new())
    }
}

impl<T: RealServerKey> RealServers<T> {
    /// None.
    pub fn new() -> RealServers<T> {
        RealServers(Vec::new())
    }

    fn position(&self, id: &RealServerId) -> Result<usize, usize> {
        self.0.binary_search_by(|r| r.real_server_id().cmp(id))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The one with id `id`, if any.
    pub fn get(&self, id: &RealServerId) -> Option<&T> {
        self.position(id).ok().map(|i| &self.0[i])
    }

    /// The one with id `id`, if any, to change (not its id).
    pub fn get_mut(&mut self, id: &RealServerId) -> Option<&mut T> {
        self.position(id).ok().map(|i| &mut self.0[i])
    }

    /// Whether one has id `id`.
    pub fn contains_key(&self, id: &RealServerId) -> bool {
        self.position(id).is_ok()
    }

    /// Adds `rs`, or replaces the one with its id (returned).
    pub fn insert(&mut self, rs: T) -> Option<T> {
        match self.position(&rs.real_server_id()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], rs)),
            Err(i) => {
                // Most sets stop growing at their size, and the common change replaces one
                // real server (the new one added while the old one drains): a small set grows
                // by one (a copy of a few hundred bytes), so that a Service changed once keeps
                // no slack for good; a large one by a quarter, so that filling it stays linear.
                if self.0.len() == self.0.capacity() {
                    let more = if self.0.len() < EXACT_GROWTH_BELOW { 1 } else { self.0.len() / 4 };
                    self.0.reserve_exact(more);
                }
                self.0.insert(i, rs);
                None
            }
        }
    }

    /// Removes the one with id `id` and returns it.
    pub fn remove(&mut self, id: &RealServerId) -> Option<T> {
        let i = self.position(id).ok()?;
        let removed = self.0.remove(i);
        let slack = if self.0.len() < EXACT_GROWTH_BELOW { 0 } else { self.0.len() / 4 + 4 };
        if self.0.capacity() > self.0.len() + slack {
            self.0.shrink_to_fit();
        }
        Some(removed)
    }

    /// All of them, in id order.
    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// All of them, in id order, to change (not their ids).
    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.0.iter_mut()
    }

    /// Their ids, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = RealServerId> + '_ {
        self.0.iter().map(RealServerKey::real_server_id)
    }
}

impl<T: RealServerKey> FromIterator<T> for RealServers<T> {
    /// The last of several with one id wins, as in a map.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut all: Vec<T> = iter.into_iter().collect();
        // Stable: of equal ids the last stays last, and dedup keeps the first of a run.
        all.sort_by_key(RealServerKey::real_server_id);
        all.reverse();
        all.dedup_by_key(|r| r.real_server_id());
        all.reverse();
        all.shrink_to_fit();
        RealServers(all)
    }
}

impl<'a, T> IntoIterator for &'a RealServers<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Serialized as a list, in id order.
impl<T: Serialize> Serialize for RealServers<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

/// Read from a list in any order; the last of several with one id wins, as in a map.
impl<'de, T: Deserialize<'de> + RealServerKey> Deserialize<'de> for RealServers<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn rs(last: u8, weight: u32) -> RealServer {
        RealServer::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 80, weight)
    }

    #[test]
    fn kept_in_id_order_one_per_id_as_a_map_would() {
        let mut set: RealServers<RealServer> = [rs(3, 1), rs(1, 1), rs(2, 1), rs(1, 7)].into_iter().collect();
        assert_eq!(set.keys().map(|id| id.addr.to_string()).collect::<Vec<_>>(), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(set.get(&rs(1, 0).id).map(|r| r.weight), Some(7), "the last of one id wins");
        assert_eq!(set.insert(rs(2, 5)).map(|r| r.weight), Some(1));
        assert_eq!(set.insert(rs(0, 1)), None);
        assert_eq!(set.len(), 4);
        assert_eq!(set.values().next().map(|r| r.id), Some(rs(0, 1).id));
        assert_eq!(set.remove(&rs(3, 0).id).map(|r| r.weight), Some(1));
        assert_eq!(set.remove(&rs(3, 0).id), None);
        assert!(!set.contains_key(&rs(3, 0).id) && set.contains_key(&rs(2, 0).id));
        if let Some(r) = set.get_mut(&rs(2, 0).id) {
            r.weight = 9;
        }
        assert_eq!(set.get(&rs(2, 0).id).map(|r| r.weight), Some(9));
    }

    #[test]
    fn grows_and_shrinks_near_its_size() {
        let mut set = RealServers::new();
        for i in 0..200u8 {
            set.insert(rs(i, 1));
        }
        assert!(set.0.capacity() <= 200 + 200 / 4 + 1, "capacity {}", set.0.capacity());
        for i in 0..190u8 {
            set.remove(&rs(i, 1).id);
        }
        assert!(set.0.capacity() <= 10 + 10 / 4 + 4, "capacity {}", set.0.capacity());
        let collected: RealServers<RealServer> = (0..10u8).map(|i| rs(i, 1)).collect();
        assert_eq!(collected.0.capacity(), 10);
    }

    #[test]
    fn a_replaced_real_server_leaves_no_slack_in_a_small_set() {
        // Churn's usual change: one endpoint in, the old one drained, then removed.
        let mut set: RealServers<RealServer> = (0..10u8).map(|i| rs(i, 1)).collect();
        for round in 0..3u8 {
            set.insert(rs(100 + round, 1));
            set.remove(&rs(if round == 0 { 0 } else { 99 + round }, 1).id);
            assert_eq!((set.len(), set.0.capacity()), (10, 10), "round {round}");
        }
    }

    #[test]
    fn serialized_as_a_list_and_read_back_equal() {
        let set: RealServers<RealServer> = [rs(2, 1), rs(1, 3)].into_iter().collect();
        let text = serde_json::to_string(&set).unwrap();
        assert!(text.starts_with("[{"), "{text}");
        assert_eq!(serde_json::from_str::<RealServers<RealServer>>(&text).unwrap(), set);
    }
}
