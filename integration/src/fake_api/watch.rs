//! One watch stream: newline-delimited JSON events, as the API server sends them.
//!
//! The stream replays the retained changes after the requested resourceVersion (or, from
//! version 0 or none, an `ADDED` event per current object), then follows new commits; sends a
//! `BOOKMARK` when idle for the bookmark interval; ends at `timeoutSeconds` or when the server
//! hangs up its watches; and, like the API server, reports a version it no longer retains as
//! an `ERROR` event carrying a 410 `Expired` Status before closing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::FakeApiError;
use super::kinds::Kind;
use super::shared::Shared;
use super::store::{Change, ChangeType, Filter};

/// What a client asked of a watch.
#[derive(Debug)]
pub(crate) struct WatchRequest {
    pub(crate) kind: Kind,
    pub(crate) filter: Filter,
    /// None (or 0) means "from the current state, with synthetic ADDED events".
    pub(crate) resource_version: Option<u64>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents=true` (streaming list): the current objects, then a bookmark
    /// annotated `k8s.io/initial-events-end`.
    pub(crate) send_initial_events: bool,
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&WireEvent { kind, object }).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Starts the task feeding a watch response body; the returned receiver yields its chunks.
pub(crate) fn start(shared: Arc<Shared>, request: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    shared.watches.fetch_add(1, Ordering::Relaxed);
    shared.open_watches.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        run(&shared, request, &tx).await;
        shared.open_watches.fetch_sub(1, Ordering::Relaxed);
    });
    rx
}

/// How a change looks to a watch with this filter: selection changes turn modifications
/// into additions or deletions, as on the API server.
fn visible(change: &Change, filter: &Filter) -> Option<ChangeType> {
    let now = filter.matches(&change.object);
    let before = change.previous.as_deref().is_some_and(|p| filter.matches(p));
    match (change.change, before, now) {
        (ChangeType::Added, _, true) | (ChangeType::Deleted, _, true) => Some(change.change),
        (ChangeType::Modified, true, true) => Some(ChangeType::Modified),
        (ChangeType::Modified, false, true) => Some(ChangeType::Added),
        (ChangeType::Modified, true, false) => Some(ChangeType::Deleted),
        _ => None,
    }
}

/// A bookmark at `version`; `initial_end` marks the end of a streaming list's initial events.
fn bookmark(kind: Kind, version: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": version.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata})
}

async fn run(shared: &Shared, request: WatchRequest, tx: &mpsc::Sender<Bytes>) {
    let mut committed = shared.committed.subscribe();
    let mut hangup = shared.hangup.subscribe();
    hangup.mark_unchanged();
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let interval = shared.config.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;

    let mut cursor = match request.resource_version.filter(|v| *v != 0) {
        Some(version) => version,
        None => {
            committed.mark_unchanged();
            let (objects, version) = shared.store().snapshot(request.kind, &request.filter);
            for object in objects {
                if tx.send(line("ADDED", &object)).await.is_err() {
                    return;
                }
            }
            if request.send_initial_events {
                let end = bookmark(request.kind, version, true);
                if tx.send(line("BOOKMARK", &end)).await.is_err() {
                    return;
                }
            }
            version
        }
    };
    loop {
        // Marking the commit signal seen before reading the store means a commit racing
        // with the read still wakes the loop below.
        committed.mark_unchanged();
        let batch = shared.store().changes_since(request.kind, cursor);
        let (changes, now) = match batch {
            Ok(batch) => batch,
            Err(error @ FakeApiError::Expired { .. }) => {
                let _ = tx.send(line("ERROR", &error.status())).await;
                return;
            }
            Err(_) => return,
        };
        for change in &changes {
            if let Some(event) = visible(change, &request.filter)
                && tx.send(line(event.wire_name(), &change.object)).await.is_err()
            {
                return;
            }
        }
        cursor = now;
        if !changes.is_empty() {
            // An event carries a version as good as a bookmark; postpone the next one.
            next_bookmark = Instant::now() + interval;
        }
        let expiry = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = hangup.changed() => return,
            _ = tx.closed() => return,
            _ = expiry => return,
            _ = tokio::time::sleep_until(next_bookmark), if request.bookmarks => {
                if tx.send(line("BOOKMARK", &bookmark(request.kind, cursor, false))).await.is_err() {
                    return;
                }
                next_bookmark = Instant::now() + interval;
            }
        }
    }
}
