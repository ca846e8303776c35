//! The object store: objects by kind, namespace and name, one global monotonic
//! resourceVersion (like etcd's revision), and a bounded history of changes for watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use super::error::FakeApiError;
use super::kinds::Kind;
use super::selector::{FieldSelector, LabelSelector};

/// What a change did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was replaced by a different one.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl ChangeType {
    /// The watch event `type` for this change.
    pub fn wire_name(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as kept in the history.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion the change committed at.
    pub resource_version: u64,
    /// The kind of the object.
    pub kind: Kind,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (for a deletion: the last state, at the deletion's version).
    pub object: Arc<Value>,
    /// The object before a modification: watches with a selector need it to turn a
    /// modification into an addition or a deletion when the object enters or leaves the
    /// selection, as the API server does.
    pub previous: Option<Arc<Value>>,
}

/// The result of applying one object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The object's kind (`Service`).
    pub kind: &'static str,
    /// Its namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its resourceVersion after the apply.
    pub resource_version: u64,
    /// `created`, `updated` or `unchanged` (an identical replace commits nothing).
    pub outcome: &'static str,
}

/// Selects objects for a list or a watch.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only objects in this namespace (namespaced request paths).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether the object is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let in_namespace = self
            .namespace
            .as_deref()
            .is_none_or(|ns| object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns));
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The selected objects, in key order (namespace, then name).
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// The continue token when more selected objects follow.
    pub continue_token: Option<String>,
}

type Key = (String, String);

/// The store. Not synchronised: the server wraps it in a mutex.
#[derive(Debug)]
pub struct Store {
    objects: HashMap<Kind, BTreeMap<Key, Arc<Value>>>,
    resource_version: u64,
    /// Changes with versions in `(compacted, resource_version]`, oldest first.
    history: VecDeque<Arc<Change>>,
    /// Every change at or below this version is gone from the history.
    compacted: u64,
    history_limit: usize,
    next_uid: u64,
}

impl Store {
    /// An empty store keeping at most `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Store {
        Store {
            objects: HashMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            compacted: 1,
            history_limit: history_limit.max(1),
            next_uid: 1,
        }
    }

    /// The current (latest committed) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Creates or replaces an object (`apiVersion`, `kind` and `metadata.name` required;
    /// `metadata.namespace` defaults to `default` for namespaced kinds). An identical replace
    /// commits nothing, as on the real API server.
    pub fn apply(&mut self, mut object: Value) -> Result<Applied, FakeApiError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
        let api_version = text("/apiVersion").unwrap_or_default();
        let kind_name = text("/kind").unwrap_or_default();
        let kind = Kind::from_type(&api_version, &kind_name)
            .ok_or(FakeApiError::UnknownKind { api_version, kind: kind_name.clone() })?;
        let name =
            text("/metadata/name").filter(|n| !n.is_empty()).ok_or(FakeApiError::MissingName { kind: kind_name })?;
        let namespace = if kind.namespaced() {
            text("/metadata/namespace").filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())
        } else {
            String::new()
        };
        let key = (namespace.clone(), name.clone());
        let existing = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned();
        let uid = match existing.as_deref().and_then(|o| o.pointer("/metadata/uid")) {
            Some(uid) => uid.clone(),
            None => Value::String(format!("00000000-fake-0000-0000-{:012}", self.next_uid)),
        };
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(FakeApiError::BadDocument { index: 0, reason: "metadata is not a mapping".into() });
        };
        metadata.insert("uid".into(), uid);
        if kind.namespaced() {
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
        }
        if let Some(old) = &existing {
            let mut candidate = object.clone();
            if let Some(rv) = old.pointer("/metadata/resourceVersion") {
                candidate["metadata"]["resourceVersion"] = rv.clone();
            }
            if candidate == **old {
                return Ok(Applied {
                    kind: kind.name(),
                    namespace,
                    name,
                    resource_version: version_of(old),
                    outcome: "unchanged",
                });
            }
        } else {
            self.next_uid += 1;
        }
        let version = self.resource_version + 1;
        object["metadata"]["resourceVersion"] = Value::String(version.to_string());
        let object = Arc::new(object);
        self.objects.entry(kind).or_default().insert(key, object.clone());
        let change = if existing.is_some() { ChangeType::Modified } else { ChangeType::Added };
        self.commit(Change { resource_version: version, kind, change, object, previous: existing });
        Ok(Applied {
            kind: kind.name(),
            namespace,
            name,
            resource_version: version,
            outcome: if change == ChangeType::Added { "created" } else { "updated" },
        })
    }

    /// Deletes an object; returns the deletion's resourceVersion.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<u64, FakeApiError> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        let key = (namespace.to_owned(), name.to_owned());
        let removed = self.objects.get_mut(&kind).and_then(|m| m.remove(&key));
        let Some(removed) = removed else {
            return Err(FakeApiError::NotFound {
                kind: kind.name().into(),
                namespace: namespace.into(),
                name: name.into(),
            });
        };
        let version = self.resource_version + 1;
        let mut last = (*removed).clone();
        last["metadata"]["resourceVersion"] = Value::String(version.to_string());
        self.commit(Change {
            resource_version: version,
            kind,
            change: ChangeType::Deleted,
            object: Arc::new(last),
            previous: None,
        });
        Ok(version)
    }

    /// One object by name.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        self.objects.get(&kind)?.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Forgets the whole history, after one more (empty) revision, as when etcd compacts
    /// while other resources are written: every watch must then restart with a new list.
    pub fn compact(&mut self) {
        self.resource_version += 1;
        self.compacted = self.resource_version;
        self.history.clear();
    }

    /// The first page of a list (`continue_token` None) or the page after a continue token.
    ///
    /// Pages after the first are read from the current state but carry the first page's
    /// resourceVersion, so a watch started from it replays whatever changed meanwhile: what a
    /// list-then-watch client needs, without keeping old versions of objects.
    pub fn list(
        &self,
        kind: Kind,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, FakeApiError> {
        let (resource_version, after) = match continue_token {
            Some(token) => {
                let (version, key) = decode_continue(token)?;
                if version < self.compacted {
                    return Err(FakeApiError::Expired { requested: version, oldest: self.compacted });
                }
                (version, Bound::Excluded(key))
            }
            None => (self.resource_version, Bound::Unbounded),
        };
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last_key: Option<&Key> = None;
        let mut continue_token = None;
        let empty = BTreeMap::new();
        let objects = self.objects.get(&kind).unwrap_or(&empty);
        for (key, object) in objects.range((after, Bound::Unbounded)) {
            if !filter.matches(object) {
                continue;
            }
            if items.len() == limit {
                // Another selected object follows: resume after the last one served.
                continue_token = last_key.map(|last| encode_continue(resource_version, last));
                break;
            }
            items.push(object.clone());
            last_key = Some(key);
        }
        Ok(Page { items, resource_version, continue_token })
    }

    /// Every current object of `kind` the filter selects, and the current version: what a
    /// watch from resourceVersion 0 (or none) starts with.
    pub fn snapshot(&self, kind: Kind, filter: &Filter) -> (Vec<Arc<Value>>, u64) {
        let items = self
            .objects
            .get(&kind)
            .map(|m| m.values().filter(|o| filter.matches(o)).cloned().collect())
            .unwrap_or_default();
        (items, self.resource_version)
    }

    /// The changes to `kind` committed after `after`, and the current version. Fails with
    /// `Expired` when some of them are no longer retained, or when `after` is newer than any
    /// version this store has issued (the client saw a previous incarnation of the server).
    pub fn changes_since(&self, kind: Kind, after: u64) -> Result<(Vec<Arc<Change>>, u64), FakeApiError> {
        if after < self.compacted || after > self.resource_version {
            return Err(FakeApiError::Expired { requested: after, oldest: self.compacted });
        }
        let start = self.history.partition_point(|c| c.resource_version <= after);
        let changes = self.history.range(start..).filter(|c| c.kind == kind).cloned().collect();
        Ok((changes, self.resource_version))
    }

    fn commit(&mut self, change: Change) {
        self.resource_version = change.resource_version;
        self.history.push_back(Arc::new(change));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.resource_version;
            }
        }
    }
}

fn version_of(object: &Value) -> u64 {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Continue tokens are opaque to clients; this one is `version/namespace/name` in hex so
/// that it survives any query encoding.
fn encode_continue(version: u64, (namespace, name): &Key) -> String {
    format!("{version}/{namespace}/{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, Key), FakeApiError> {
    let bad = || FakeApiError::BadParameter { parameter: "continue", value: token.to_owned() };
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '/');
    let version = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_owned();
    let name = parts.next().ok_or_else(bad)?.to_owned();
    Ok((version, (namespace, name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, port: u16) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn apply_creates_updates_and_skips_identical_replaces() {
        let mut store = Store::new(100);
        let outcomes: Vec<_> = [service("a", 80), service("a", 80), service("a", 81), service("b", 80)]
            .into_iter()
            .map(|o| store.apply(o).unwrap())
            .map(|a| (a.name, a.outcome, a.resource_version))
            .collect();
        let expected = [("a", "created", 2), ("a", "unchanged", 2), ("a", "updated", 3), ("b", "created", 4)];
        let expected: Vec<_> = expected.iter().map(|(n, o, v)| (n.to_string(), *o, *v)).collect();
        assert_eq!(outcomes, expected);
        let stored = store.get(Kind::Service, "default", "a").unwrap();
        assert_eq!(stored["metadata"]["resourceVersion"], "3");
        assert_eq!(stored["metadata"]["namespace"], "default");
    }

    #[test]
    fn refuses_objects_it_cannot_key() {
        let mut store = Store::new(10);
        let bad = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": "x"}),
            json!(42),
        ];
        for object in bad {
            assert!(store.apply(object.clone()).is_err(), "{object} was accepted");
        }
        assert_eq!(store.resource_version(), 1);
    }

    #[test]
    fn pages_walk_every_selected_object_once() {
        let mut store = Store::new(100);
        for i in 0..7 {
            store.apply(service(&format!("s{i}"), 80)).unwrap();
        }
        let mut names = Vec::new();
        let mut token = None;
        let mut versions = Vec::new();
        loop {
            let page = store.list(Kind::Service, &Filter::default(), Some(3), token.as_deref()).unwrap();
            names.extend(page.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()));
            versions.push(page.resource_version);
            store.apply(service("zz-late", 80)).ok();
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(&names[..7], ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
        assert_eq!(versions, vec![8, 8, 8], "every page carries the first page's version");
    }

    #[test]
    fn history_is_bounded_and_expiry_is_reported() {
        let mut store = Store::new(2);
        for i in 0..4 {
            store.apply(service(&format!("s{i}"), 80)).unwrap();
        }
        // versions 2..=5 committed; only 4 and 5 are retained.
        assert!(matches!(store.changes_since(Kind::Service, 2), Err(FakeApiError::Expired { .. })));
        let (changes, now) = store.changes_since(Kind::Service, 3).unwrap();
        assert_eq!((changes.len(), now), (2, 5));
        assert!(store.changes_since(Kind::Service, 99).is_err(), "a future version is refused");
        store.compact();
        assert!(store.changes_since(Kind::Service, 5).is_err());
        assert_eq!(store.changes_since(Kind::Service, 6).unwrap().0.len(), 0);
    }

    #[test]
    fn deletion_commits_a_version_and_reports_unknown_objects() {
        let mut store = Store::new(10);
        store.apply(service("a", 80)).unwrap();
        assert_eq!(store.delete(Kind::Service, "default", "a").unwrap(), 3);
        let (changes, _) = store.changes_since(Kind::Service, 2).unwrap();
        assert_eq!(changes[0].change, ChangeType::Deleted);
        assert_eq!(changes[0].object["metadata"]["resourceVersion"], "3");
        assert!(matches!(store.delete(Kind::Service, "default", "a"), Err(FakeApiError::NotFound { .. })));
        assert!(store.list(Kind::Service, &Filter::default(), None, Some("zz")).is_err());
    }
}
