//! The control API tests use to change the fake cluster over HTTP, under `/fake/`:
//!
//! | request | effect |
//! | --- | --- |
//! | `POST /fake/apply` (JSON or YAML, multi-document) | create-or-replace each object |
//! | `DELETE /fake/objects/{kind}/{namespace}/{name}` (or `/{kind}/{name}`) | delete one object |
//! | `POST /fake/compact` | forget the history and hang up every watch: reconnecting watchers get 410 |
//! | `POST /fake/hangup` | end every open watch stream (clients resume from their version) |
//! | `GET /fake/state` | the current resourceVersion and request counters |
//!
//! In process only: `FakeApiServer::hold_continued_lists` (the continuations of paginated
//! lists wait).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::api::failure;
use super::error::FakeApiError;
use super::kinds::Kind;
use super::shared::{Shared, parse_documents};

pub(crate) async fn apply(State(shared): State<Arc<Shared>>, body: String) -> Response {
    match parse_documents(&body).and_then(|objects| shared.apply(objects)) {
        Ok(applied) => Json(applied).into_response(),
        Err(error) => failure(&error),
    }
}

fn delete(shared: &Shared, kind: &str, namespace: &str, name: &str) -> Response {
    let Some(kind) = Kind::from_word(kind) else {
        return failure(&FakeApiError::UnknownKind { api_version: String::new(), kind: kind.into() });
    };
    match shared.delete(kind, namespace, name) {
        Ok(version) => Json(json!({"resourceVersion": version})).into_response(),
        Err(error) => failure(&error),
    }
}

pub(crate) async fn delete_namespaced(
    State(shared): State<Arc<Shared>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    delete(&shared, &kind, &namespace, &name)
}

pub(crate) async fn delete_cluster_scoped(
    State(shared): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    delete(&shared, &kind, "", &name)
}

pub(crate) async fn compact(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.compact();
    StatusCode::NO_CONTENT
}

pub(crate) async fn hangup(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.hang_up_watches();
    StatusCode::NO_CONTENT
}

pub(crate) async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let counts = shared.counts();
    let version = shared.store().resource_version();
    Json(json!({
        "resourceVersion": version,
        "lists": counts.lists,
        "watches": counts.watches,
        "openWatches": counts.open_watches,
    }))
    .into_response()
}
