//! The state every request handler shares: the store behind a mutex, the signals watches
//! wait on, and request counters for tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::error::FakeApiError;
use super::kinds::Kind;
use super::rbac::Grants;
use super::store::{Applied, Store};
use super::tls::TlsIdentity;

/// Tunables of the fake API server.
#[derive(Clone, Debug)]
pub struct FakeApiConfig {
    /// How often an idle watch gets a `BOOKMARK` event (when the client allows bookmarks).
    pub bookmark_interval: Duration,
    /// How many changes the history keeps for watches; older watch starts get 410 Expired.
    pub history_limit: usize,
    /// The client's RBAC grants: a request they do not cover gets 403 Forbidden, as on a real
    /// cluster. `None` allows everything.
    pub rbac: Option<Grants>,
    /// Serve HTTPS with this identity and require its bearer token on the API's paths (the
    /// anonymous ones, `/version` and health, and the `/fake` control paths excepted), as a
    /// real API server does. `None` serves plain HTTP to anyone.
    pub tls: Option<TlsIdentity>,
}

impl Default for FakeApiConfig {
    fn default() -> Self {
        FakeApiConfig { bookmark_interval: Duration::from_secs(5), history_limit: 100_000, rbac: None, tls: None }
    }
}

/// How many API requests of each sort the server has answered, for tests that check that a
/// client relisted or reconnected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// List requests (each page counts).
    pub lists: u64,
    /// Watch requests.
    pub watches: u64,
    /// Watch streams open right now.
    pub open_watches: usize,
    /// Continued list requests held right now (see `FakeApiServer::hold_continued_lists`).
    pub held_lists: usize,
}

/// One held request in a count, for as long as it lives.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn count(held: &'a AtomicUsize) -> Held<'a> {
        held.fetch_add(1, Ordering::Relaxed);
        Held(held)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared state of one fake API server.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Carries the latest resourceVersion; watches wake on every commit.
    pub(crate) committed: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    pub(crate) hangup: watch::Sender<u64>,
    /// While true, a list request that continues a paginated list waits (a big cluster's
    /// lists arriving slowly, held for as long as a test needs).
    pub(crate) hold_continued: watch::Sender<bool>,
    pub(crate) config: FakeApiConfig,
    pub(crate) lists: AtomicU64,
    pub(crate) watches: AtomicU64,
    pub(crate) open_watches: AtomicUsize,
    pub(crate) held_lists: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(config: FakeApiConfig) -> Shared {
        let store = Store::new(config.history_limit);
        let (committed, _) = watch::channel(store.resource_version());
        let (hangup, _) = watch::channel(0);
        Shared {
            store: Mutex::new(store),
            committed,
            hangup,
            hold_continued: watch::Sender::new(false),
            config,
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            open_watches: AtomicUsize::new(0),
            held_lists: AtomicUsize::new(0),
        }
    }

    /// The store, locked. A panic while holding the lock leaves the data consistent (every
    /// mutation is a single insert/remove plus a history push), so poisoning is ignored.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies objects in order; stops at the first refused one (those before it stay applied).
    pub(crate) fn apply(&self, objects: Vec<Value>) -> Result<Vec<Applied>, FakeApiError> {
        let mut results = Vec::with_capacity(objects.len());
        let (outcome, version) = {
            let mut store = self.store();
            let outcome = objects.into_iter().try_for_each(|object| {
                results.push(store.apply(object)?);
                Ok(())
            });
            (outcome, store.resource_version())
        };
        self.committed.send_replace(version);
        outcome.map(|()| results)
    }

    pub(crate) fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<u64, FakeApiError> {
        let version = self.store().delete(kind, namespace, name)?;
        self.committed.send_replace(version);
        Ok(version)
    }

    pub(crate) fn compact(&self) {
        let version = {
            let mut store = self.store();
            store.compact();
            store.resource_version()
        };
        self.committed.send_replace(version);
        self.hang_up_watches();
    }

    pub(crate) fn hang_up_watches(&self) {
        self.hangup.send_modify(|generation| *generation += 1);
    }

    /// Resolves once continued lists are not held.
    pub(crate) async fn continued_list_allowed(&self) {
        let mut held = self.hold_continued.subscribe();
        if !*held.borrow_and_update() {
            return;
        }
        // Counted while it waits, also when the client goes away meanwhile (the future dropped).
        let _counted = Held::count(&self.held_lists);
        // The sender lives as long as `self`.
        let _ = held.wait_for(|held| !held).await;
    }

    pub(crate) fn counts(&self) -> RequestCounts {
        RequestCounts {
            lists: self.lists.load(Ordering::Relaxed),
            watches: self.watches.load(Ordering::Relaxed),
            open_watches: self.open_watches.load(Ordering::Relaxed),
            held_lists: self.held_lists.load(Ordering::Relaxed),
        }
    }
}

/// Parses JSON or YAML text holding one or more documents (`---` separated), each an object
/// or a `kind: List` whose `items` are objects. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, FakeApiError> {
    let mut objects = Vec::new();
    sources::yaml::each_document(
        text,
        |index, value: Value| push_document(&mut objects, index, value),
        |index, e| FakeApiError::BadDocument { index, reason: e.to_string() },
    )?;
    Ok(objects)
}

/// One document of [`parse_documents`]: an object, a `kind: List`'s items, or nothing.
fn push_document(objects: &mut Vec<Value>, index: usize, value: Value) -> Result<(), FakeApiError> {
    {
        match value {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = map.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                objects.extend(items);
            }
            Value::Object(_) => objects.push(value),
            other => {
                return Err(FakeApiError::BadDocument { index, reason: format!("not a mapping: {other}") });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_from_yaml_json_and_lists() {
        let cases: &[(&str, usize)] = &[
            ("kind: Service\n---\nkind: Node\n---\n", 2),
            (r#"{"kind": "Service"}"#, 1),
            ("kind: List\nitems:\n- kind: Service\n- kind: Node\n---\nkind: Node\n", 3),
            ("", 0),
        ];
        for (text, count) in cases {
            assert_eq!(parse_documents(text).unwrap().len(), *count, "{text}");
        }
        for bad in ["- a\n- b\n", "kind: [unclosed\n", "42"] {
            assert!(parse_documents(bad).is_err(), "{bad} was accepted");
        }
    }
}
