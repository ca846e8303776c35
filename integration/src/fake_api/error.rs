//! The fake API server's errors, and their rendering as a Kubernetes `Status`.

use std::net::SocketAddr;

use axum::http::StatusCode;
use serde_json::{Value, json};

/// What went wrong in the fake API server; each variant names the object or input concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeApiError {
    /// A `labelSelector` or `fieldSelector` term could not be parsed or is not supported.
    #[error("unable to parse selector {selector:?}: bad term {term:?}")]
    BadSelector {
        /// The whole selector.
        selector: String,
        /// The offending term.
        term: String,
    },
    /// An object's `apiVersion`/`kind` is not one the fake server stores.
    #[error("kind {kind:?} of apiVersion {api_version:?} is not served by the fake API server")]
    UnknownKind {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// An applied object has no `metadata.name`.
    #[error("{kind} object without metadata.name")]
    MissingName {
        /// The object's kind.
        kind: String,
    },
    /// An applied document is not a JSON/YAML mapping.
    #[error("document {index} is not an object: {reason}")]
    BadDocument {
        /// Zero-based position of the document in the applied text.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// The named object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// The kind (`Service`).
        kind: String,
        /// The namespace, empty for cluster-scoped objects.
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// The requested resourceVersion or continue token is older than the retained history
    /// (or newer than the server has ever been, e.g. after a restart with fresh state).
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The resourceVersion the client asked for.
        requested: u64,
        /// The oldest resourceVersion a watch can start from now.
        oldest: u64,
    },
    /// A `resourceVersion`, `limit` or `continue` parameter is not well-formed.
    #[error("invalid {parameter} parameter {value:?}")]
    BadParameter {
        /// The query parameter's name.
        parameter: &'static str,
        /// Its value.
        value: String,
    },
    /// The RBAC rules the server was given do not grant this request.
    #[error(
        "{resource} is forbidden: User \"system:serviceaccount:kube-system:kube-ipvs-proxy\" cannot {verb} resource \"{resource}\" in API group \"{group}\""
    )]
    Forbidden {
        /// The request's RBAC verb (`get`, `list`, `watch`, `create`...).
        verb: &'static str,
        /// The API group, empty for the core group.
        group: String,
        /// The resource (`services`).
        resource: String,
    },
    /// The request carried no valid bearer token (the server serves TLS with a token).
    #[error("Unauthorized")]
    Unauthorized,
    /// The TLS identity could not be made.
    #[error("cannot make the TLS identity: {0}")]
    Tls(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl FakeApiError {
    /// The HTTP code and Kubernetes `Status.reason` the real API server uses for this error.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            FakeApiError::BadSelector { .. }
            | FakeApiError::BadParameter { .. }
            | FakeApiError::BadDocument { .. }
            | FakeApiError::UnknownKind { .. } => (StatusCode::BAD_REQUEST, "BadRequest"),
            FakeApiError::MissingName { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            FakeApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            FakeApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            FakeApiError::Expired { .. } => (StatusCode::GONE, "Expired"),
            FakeApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            FakeApiError::Bind { .. } | FakeApiError::Tls(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `Status` object (`kind: Status`) the real API server returns for this error, in a
    /// response body or in a watch `ERROR` event.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        })
    }
}
