//! The Kubernetes REST paths: list, watch and get of the stored kinds, plus the few
//! endpoints clients call around them (`/version`, health, discovery, event writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::FakeApiError;
use super::kinds::Kind;
use super::selector::{FieldSelector, LabelSelector};
use super::shared::Shared;
use super::store::Filter;
use super::watch::{self, WatchRequest};

/// A request path resolved to a resource.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    group_version: String,
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
}

/// Splits `/api/v1[/namespaces/{ns}]/{plural}[/{name}]` and the `/apis/{group}/{version}/...`
/// equivalent.
fn parse_path(path: &str) -> Option<Target<'_>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    match rest {
        [plural] => Some(Target { group_version, namespace, plural, name: None }),
        [plural, name] => Some(Target { group_version, namespace, plural, name: Some(*name) }),
        _ => None,
    }
}

/// Renders an error as the API server does: the HTTP code and a `Status` body.
pub(crate) fn failure(error: &FakeApiError) -> Response {
    (error.code_and_reason().0, Json(error.status())).into_response()
}

fn not_found(path: &str) -> Response {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the server could not find the requested resource ({path})"),
        "reason": "NotFound", "code": 404,
    });
    (StatusCode::NOT_FOUND, Json(status)).into_response()
}

/// Whether the request asks for a watch (`?watch=true` or `?watch=1`).
fn is_watch(query: &HashMap<String, String>) -> bool {
    query.get("watch").is_some_and(|w| w == "1" || w == "true")
}

/// Every path under `/api` and `/apis` that is not discovery.
pub(crate) async fn resource(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(target) = parse_path(path) else {
        return not_found(path);
    };
    if let Some(grants) = &shared.config.rbac {
        let verb = super::rbac::verb(&method, target.name.is_some(), is_watch(&query));
        let group = target.group_version.rsplit_once('/').map_or("", |(group, _)| group);
        if !grants.allows(group, target.plural, verb) {
            return failure(&FakeApiError::Forbidden { verb, group: group.into(), resource: target.plural.into() });
        }
    }
    // Writes of Events (core or events.k8s.io) are accepted and dropped: the daemon may
    // record events, and nothing here reads them back.
    if target.plural == "events" && method == Method::POST {
        let echoed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return (StatusCode::CREATED, Json(echoed)).into_response();
    }
    if target.plural == "events" && method == Method::PATCH {
        return (StatusCode::OK, Json(json!({}))).into_response();
    }
    let Some(kind) = Kind::from_resource(&target.group_version, target.plural) else {
        return not_found(path);
    };
    if method != Method::GET {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{method} is not supported by the fake API server"),
            "reason": "MethodNotAllowed", "code": 405});
        return (StatusCode::METHOD_NOT_ALLOWED, Json(status)).into_response();
    }
    if query.get("continue").is_some_and(|c| !c.is_empty()) {
        shared.continued_list_allowed().await;
    }
    match answer(&shared, kind, &target, &query) {
        Ok(response) => response,
        Err(error) => failure(&error),
    }
}

fn answer(
    shared: &Arc<Shared>,
    kind: Kind,
    target: &Target<'_>,
    query: &HashMap<String, String>,
) -> Result<Response, FakeApiError> {
    if let Some(name) = target.name {
        let object = shared.store().get(kind, target.namespace.unwrap_or(""), name);
        return object.map(|o| Json(&*o).into_response()).ok_or_else(|| FakeApiError::NotFound {
            kind: kind.name().into(),
            namespace: target.namespace.unwrap_or("").into(),
            name: name.into(),
        });
    }
    let filter = Filter {
        namespace: target.namespace.filter(|_| kind.namespaced()).map(str::to_owned),
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?,
    };
    let number = |parameter: &'static str| -> Result<Option<u64>, FakeApiError> {
        match query.get(parameter).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => {
                value.parse().map(Some).map_err(|_| FakeApiError::BadParameter { parameter, value: value.clone() })
            }
        }
    };
    let resource_version = number("resourceVersion")?;
    if is_watch(query) {
        let request = WatchRequest {
            kind,
            filter,
            resource_version,
            timeout: number("timeoutSeconds")?.map(Duration::from_secs),
            bookmarks: query.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1"),
            send_initial_events: query.get("sendInitialEvents").is_some_and(|b| b == "true" || b == "1"),
        };
        let mut chunks = watch::start(shared.clone(), request);
        let stream = futures::stream::poll_fn(move |cx| {
            chunks.poll_recv(cx).map(|chunk| chunk.map(Ok::<Bytes, std::convert::Infallible>))
        });
        let mut response = Body::from_stream(stream).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    shared.lists.fetch_add(1, Ordering::Relaxed);
    let limit = number("limit")?.and_then(|l| usize::try_from(l).ok());
    let continue_token = query.get("continue").filter(|c| !c.is_empty());
    let page = shared.store().list(kind, &filter, limit, continue_token.map(String::as_str))?;
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = Value::String(token);
    }
    // Serialized straight from the stored objects: no copy of a 500-object page (the bench's
    // API server shares the VM's two vCPUs with the daemon it measures).
    let list = ListBody {
        kind: format!("{}List", kind.name()),
        api_version: kind.api_version(),
        metadata,
        items: page.items.iter().map(|o| &**o).collect(),
    };
    Ok(Json(list).into_response())
}

/// A list response's body.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    kind: String,
    api_version: &'static str,
    metadata: Value,
    items: Vec<&'a Value>,
}

/// `GET /version`: what `kubectl version` and `Client::apiserver_version` read.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

/// `GET /healthz`, `/livez`, `/readyz`.
pub(crate) async fn healthy() -> &'static str {
    "ok"
}

/// `GET /api`: core group discovery.
pub(crate) async fn core_versions() -> Json<Value> {
    Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
}

/// `GET /apis`: the named groups served.
pub(crate) async fn groups() -> Json<Value> {
    let version = json!({"groupVersion": "discovery.k8s.io/v1", "version": "v1"});
    Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{"name": "discovery.k8s.io", "versions": [version], "preferredVersion": version}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources() {
        let target = |gv: &str, ns: Option<&'static str>, plural: &'static str, name| {
            Some(Target { group_version: gv.to_owned(), namespace: ns, plural, name })
        };
        let cases = [
            ("/api/v1/services", target("v1", None, "services", None)),
            ("/api/v1/nodes/n1", target("v1", None, "nodes", Some("n1"))),
            ("/api/v1/namespaces/kube-system/services", target("v1", Some("kube-system"), "services", None)),
            ("/api/v1/namespaces/a/services/b", target("v1", Some("a"), "services", Some("b"))),
            ("/apis/discovery.k8s.io/v1/endpointslices", target("discovery.k8s.io/v1", None, "endpointslices", None)),
            ("/api/v1/namespaces/default", target("v1", None, "namespaces", Some("default"))),
            ("/api", None),
            ("/metrics", None),
            ("/api/v1/a/b/c", None),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_path(path), expected, "{path}");
        }
    }
}
