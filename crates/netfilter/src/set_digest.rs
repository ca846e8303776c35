//! Digests of the element sets, so that a set can be checked against what was applied without
//! walking what was applied: the digest of a set is the wrapping sum of its elements' hashes
//! (as the kernel stores them), which does not depend on order and is kept current element by
//! element as changes are written. A reader on a socket of its own lists a set and sums the
//! same way, off the caller's loop; only a set whose digests differ needs comparing element by
//! element.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::elements::{ElementBytes, ElementSocket, element_bytes, with_socket};
use crate::nft::NftError;
use crate::script::set_name;
use crate::state::{Element, ElementChanges, FilterState};

/// One element's hash. `DefaultHasher::new()` has fixed keys: the same in the loop and in the
/// reader (both in this process).
fn element_hash(element: &ElementBytes) -> u64 {
    let mut hasher = DefaultHasher::new();
    element.hash(&mut hasher);
    hasher.finish()
}

/// The digest of a set holding `elements`.
fn digest_of<'a>(elements: impl IntoIterator<Item = &'a ElementBytes>) -> u64 {
    elements.into_iter().fold(0u64, |sum, e| sum.wrapping_add(element_hash(e)))
}

/// The digest of each set of a [`FilterState`], kept current with its changes.
#[derive(Debug, Default)]
pub(crate) struct SetDigests(HashMap<String, u64>);

impl SetDigests {
    /// The digests of the sets `state` fills.
    pub fn of(state: &FilterState) -> SetDigests {
        let mut digests = SetDigests::default();
        for element in state.elements() {
            digests.add(element, true);
        }
        digests
    }

    /// Takes in `changes` (written or about to be).
    pub fn count(&mut self, changes: &ElementChanges) {
        for element in &changes.added {
            self.add(element, true);
        }
        for element in &changes.removed {
            self.add(element, false);
        }
    }

    fn add(&mut self, element: &Element, present: bool) {
        let hash = element_hash(&element_bytes(element));
        let sum = self.0.entry(set_name(element)).or_insert(0);
        *sum = if present { sum.wrapping_add(hash) } else { sum.wrapping_sub(hash) };
    }

    /// The digest of set `set` (that of an empty set when it holds nothing).
    pub fn get(&self, set: &str) -> u64 {
        self.0.get(set).copied().unwrap_or(0)
    }
}

/// Reads the digest of a set of the `inet` table `table` as the kernel holds it, on a socket
/// of its own. Blocking: one dump of the set per call.
pub struct SetReader {
    table: String,
    socket: Option<ElementSocket>,
}

impl SetReader {
    /// A reader of table `table`'s sets; the socket opens at the first read.
    pub fn new(table: &str) -> SetReader {
        SetReader { table: table.to_string(), socket: None }
    }

    /// The digest of set `set` as listed now (compare with [`crate::Netfilter::set_digest`]).
    /// A socket that failed is opened anew at the next call.
    pub fn digest(&mut self, set: &str) -> Result<u64, NftError> {
        let table = self.table.clone();
        let error = |source| NftError::Elements { table: table.clone(), operation: "list a set", source };
        let listed = with_socket(&mut self.socket, |socket| socket.list(&self.table, set));
        Ok(digest_of(&listed.map_err(error)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Target;
    use ipvs::Protocol;

    fn target(i: u8) -> Target {
        Target::new(format!("10.96.0.{i}").parse().unwrap(), Protocol::Tcp, 80)
    }

    #[test]
    fn a_digest_kept_by_changes_is_that_of_the_set_listed_in_any_order() {
        let elements: Vec<Element> = (1..=5).map(|i| Element::ServicePort(target(i))).collect();
        let mut digests = SetDigests::default();
        let mut changes = ElementChanges::new();
        changes.added.extend(elements.iter().copied());
        changes.added.insert(Element::Hairpin(target(9)));
        digests.count(&changes);
        let mut removal = ElementChanges::new();
        removal.removed.insert(elements[2]);
        digests.count(&removal);

        let set = set_name(&elements[0]);
        let mut listed: Vec<ElementBytes> =
            elements.iter().filter(|e| **e != elements[2]).map(element_bytes).rev().collect();
        assert_eq!(digests.get(&set), digest_of(&listed));
        // A missing element, an extra one, or an altered one are told apart from the set.
        let extra = element_bytes(&Element::ServicePort(target(7)));
        listed.push(extra.clone());
        assert_ne!(digests.get(&set), digest_of(&listed));
        listed.pop();
        let gone = listed.pop().unwrap();
        assert_ne!(digests.get(&set), digest_of(&listed));
        listed.push(ElementBytes { data: Some(vec![1]), ..gone });
        assert_ne!(digests.get(&set), digest_of(&listed));
        // Other sets are apart; an empty set's digest is that of nothing.
        assert_ne!(digests.get(&set_name(&Element::Hairpin(target(9)))), 0);
        assert_eq!(digests.get("bound_v6"), digest_of(&[]));
    }
}
