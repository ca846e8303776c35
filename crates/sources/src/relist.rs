//! Turns a kube-runtime watch (with its relists after 410 Gone or a reconnect) into the changes
//! the model needs: upserts of objects that really changed and deletes of objects that vanished
//! while the watch was down.
//!
//! This is a reflector store cut down to what the proxy needs: for each object it keeps only
//! its resourceVersion and the metadata a delete needs (name, namespace, and the
//! `kubernetes.io/service-name` label linking a slice to its Service), not the object.
//! At 10,000 Services and as many EndpointSlices a full store would cost tens of MiB that the
//! model already spends once.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

use model::{Change, SERVICE_NAME_LABEL};

#[derive(Debug, Clone)]
struct Known {
    resource_version: Option<Box<str>>,
    /// The `kubernetes.io/service-name` label, the only one a delete needs. Kept as a bare
    /// string: a one-entry BTreeMap allocates a whole node (over 500 bytes), which for 10,000
    /// EndpointSlices was most of the tracker's memory.
    service_name: Option<Box<str>>,
}

/// `namespace/name` (`/name` for an object without a namespace) in one allocation: neither
/// part can hold a `/`. A pair of strings cost twice the allocations and twice the slot, for
/// every object, and again in the relist's set while a list arrives.
type Key = Box<str>;

/// What has been seen of one kind of object, keyed by `namespace/name`.
#[derive(Debug)]
pub(crate) struct Tracker<K> {
    known: HashMap<Key, Known>,
    relisting: Option<HashSet<Key>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Clone for Tracker<K> {
    fn clone(&self) -> Self {
        Tracker { known: self.known.clone(), relisting: self.relisting.clone(), _kind: std::marker::PhantomData }
    }
}

impl<K> Default for Tracker<K> {
    fn default() -> Self {
        Tracker { known: HashMap::new(), relisting: None, _kind: std::marker::PhantomData }
    }
}

fn key_of<K: Resource>(obj: &K) -> Key {
    let meta = obj.meta();
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default()).into()
}

impl<K: Resource + Default> Tracker<K> {
    /// Nothing seen yet.
    pub fn new() -> Tracker<K> {
        Tracker::default()
    }

    /// Whether no object is known.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The changes one watch event means. An object whose resourceVersion is unchanged (a
    /// relist repeating what was already applied) yields nothing, so a relist costs the model
    /// only what really changed.
    pub fn handle(&mut self, event: Event<K>) -> Vec<Change<K>> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key_of(&obj));
                }
                self.apply(obj)
            }
            Event::Apply(obj) => self.apply(obj),
            Event::Delete(obj) => {
                self.known.remove(&key_of(&obj));
                vec![Change::Delete(obj)]
            }
            Event::InitDone => {
                let mut out = Vec::new();
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<Key> = self.known.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    for key in gone {
                        if let Some(known) = self.known.remove(&key) {
                            out.push(Change::Delete(stub(key, known.service_name)));
                        }
                    }
                }
                out.push(Change::Listed);
                out
            }
        }
    }

    fn apply(&mut self, obj: K) -> Vec<Change<K>> {
        let rv = obj.meta().resource_version.as_deref();
        let key = key_of(&obj);
        if rv.is_some() && self.known.get(&key).is_some_and(|k| k.resource_version.as_deref() == rv) {
            return Vec::new();
        }
        let rv = rv.map(Box::from);
        let service_name = obj.labels().get(SERVICE_NAME_LABEL).map(|v| Box::from(v.as_str()));
        self.known.insert(key, Known { resource_version: rv, service_name });
        vec![Change::Apply(obj)]
    }
}

/// An object carrying only the metadata a delete needs.
fn stub<K: Resource + Default>(key: Key, service_name: Option<Box<str>>) -> K {
    let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
    let labels: BTreeMap<String, String> =
        service_name.into_iter().map(|v| (SERVICE_NAME_LABEL.to_string(), v.into())).collect();
    let mut obj = K::default();
    *obj.meta_mut() = ObjectMeta {
        name: Some(name.to_string()),
        namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, stream};
    use k8s_openapi::api::core::v1::Service;

    fn svc(name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                labels: Some(
                    [("app".to_string(), name.to_string()), (SERVICE_NAME_LABEL.to_string(), format!("{name}-svc"))]
                        .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    /// What a change boils down to, for comparison.
    fn summary(c: &Change<Service>) -> String {
        match c {
            Change::Apply(s) => format!("apply {}@{}", s.name_any(), s.resource_version().unwrap_or_default()),
            Change::Delete(s) => format!("delete {} {:?}", s.name_any(), s.labels().get(SERVICE_NAME_LABEL)),
            Change::Listed => "listed".into(),
        }
    }

    #[test]
    fn a_vanished_object_is_deleted_by_its_namespace_and_name_with_or_without_a_namespace() {
        let mut tracker: Tracker<Service> = Tracker::new();
        let mut cluster_scoped = svc("b", "2");
        cluster_scoped.metadata.namespace = None;
        for event in [Event::Init, Event::InitApply(svc("a", "1")), Event::InitApply(cluster_scoped), Event::InitDone] {
            tracker.handle(event);
        }
        let mut deleted: Vec<(Option<String>, Option<String>)> = tracker
            .handle(Event::Init)
            .into_iter()
            .chain(tracker.handle(Event::InitDone))
            .filter_map(|c| match c {
                Change::Delete(s) => Some((s.metadata.namespace, s.metadata.name)),
                _ => None,
            })
            .collect();
        deleted.sort();
        assert_eq!(deleted, [(None, Some("b".into())), (Some("default".into()), Some("a".into()))]);
        assert!(tracker.is_empty());
    }

    #[tokio::test]
    async fn relists_yield_only_real_changes() {
        type Case = (&'static str, Vec<Event<Service>>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "first list",
                vec![Event::Init, Event::InitApply(svc("a", "1")), Event::InitApply(svc("b", "2")), Event::InitDone],
                vec!["apply a@1", "apply b@2", "listed"],
            ),
            (
                "watch after list",
                vec![
                    Event::Init,
                    Event::InitApply(svc("a", "1")),
                    Event::InitDone,
                    Event::Apply(svc("a", "5")),
                    Event::Apply(svc("a", "5")),
                    Event::Delete(svc("a", "6")),
                ],
                vec!["apply a@1", "listed", "apply a@5", "delete a Some(\"a-svc\")"],
            ),
            (
                "relist after 410 Gone: unchanged skipped, changed applied, vanished deleted",
                vec![
                    Event::Init,
                    Event::InitApply(svc("a", "1")),
                    Event::InitApply(svc("b", "2")),
                    Event::InitApply(svc("c", "3")),
                    Event::InitDone,
                    Event::Init,
                    Event::InitApply(svc("a", "1")),
                    Event::InitApply(svc("c", "9")),
                    Event::InitApply(svc("d", "10")),
                    Event::InitDone,
                ],
                vec![
                    "apply a@1",
                    "apply b@2",
                    "apply c@3",
                    "listed",
                    "apply c@9",
                    "apply d@10",
                    "delete b Some(\"b-svc\")",
                    "listed",
                ],
            ),
            (
                "empty relist deletes everything",
                vec![Event::Init, Event::InitApply(svc("a", "1")), Event::InitDone, Event::Init, Event::InitDone],
                vec!["apply a@1", "listed", "delete a Some(\"a-svc\")", "listed"],
            ),
        ];
        for (name, events, want) in cases {
            let mut tracker = Tracker::new();
            let got: Vec<String> =
                stream::iter(events).flat_map(|e| stream::iter(tracker.handle(e))).map(|c| summary(&c)).collect().await;
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn deleted_stub_keeps_namespace_and_labels() {
        let mut tracker = Tracker::new();
        tracker.handle(Event::Init);
        tracker.handle(Event::InitApply(svc("a", "1")));
        tracker.handle(Event::InitDone);
        tracker.handle(Event::Init);
        let out = tracker.handle(Event::InitDone);
        let Change::Delete(gone) = &out[0] else { panic!("expected a delete, got {out:?}") };
        assert_eq!(gone.namespace().as_deref(), Some("default"));
        assert_eq!(gone.labels().get(SERVICE_NAME_LABEL).map(String::as_str), Some("a-svc"));
        assert!(!gone.labels().contains_key("app"), "only the labels a delete needs are kept");
        assert!(tracker.is_empty());
    }
}
