//! The EndpointSlices of one Service, by name.

use crate::endpoints::Slice;

/// The slices of one Service, ordered by name so that duplicate endpoints merge the same way
/// each time. A sorted vector: a Service has one slice or a few, and a map's node for one
/// entry would cost over a kilobyte per Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceSlices(Vec<(String, Slice)>);

impl ServiceSlices {
    /// Adds or replaces slice `name`. Held without spare room: most Services have one slice,
    /// and a vector's first growth makes room for four (three slices' worth, 300 bytes, per Service).
    pub fn insert(&mut self, name: String, slice: Slice) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => self.0[i].1 = slice,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name, slice))
            }
        }
    }

    /// Removes slice `name`, if held.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            self.0.remove(i);
            self.0.shrink_to_fit();
        }
    }

    /// Whether no slice is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The slices, ordered by name.
    pub fn values(&self) -> impl Iterator<Item = &Slice> + Clone {
        self.0.iter().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ServiceKey;
    use ipvs::Family;

    fn slice(port: u16) -> Slice {
        let ports = vec![crate::endpoints::SlicePort { name: String::new(), protocol: ipvs::Protocol::Tcp, port }];
        Slice { service: ServiceKey::new("ns", "svc"), family: Family::V4, ports, endpoints: Vec::new() }
    }

    #[test]
    fn slices_are_kept_by_name_in_order_and_replaced_by_name() {
        let mut slices = ServiceSlices::default();
        slices.insert("b".into(), slice(2));
        assert_eq!(slices.0.capacity(), 1, "no room kept for more");
        slices.insert("a".into(), slice(1));
        slices.insert("c".into(), slice(3));
        slices.insert("b".into(), slice(20));
        let ports: Vec<u16> = slices.values().map(|s| s.ports[0].port).collect();
        assert_eq!(ports, [1, 20, 3]);
        slices.remove("a");
        assert_eq!(slices.0.capacity(), 2, "no room kept once one is gone");
        slices.remove("x");
        let ports: Vec<u16> = slices.values().map(|s| s.ports[0].port).collect();
        assert_eq!(ports, [20, 3]);
        slices.remove("b");
        slices.remove("c");
        assert!(slices.is_empty());
    }
}
