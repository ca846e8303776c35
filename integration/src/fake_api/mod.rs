//! A fake Kubernetes API server for tests: the real list/watch HTTP protocol that
//! `kube-runtime`'s watcher speaks, over an in-memory store of Services, EndpointSlices and
//! Nodes, with a control API to change the cluster, force relists and go away.
//!
//! Protocol, as the API server does it:
//! - `GET /api/v1/{services,nodes}`, `/apis/discovery.k8s.io/v1/endpointslices`, their
//!   namespaced forms `/api/v1/namespaces/{ns}/services`, and `GET .../{name}`;
//! - `labelSelector` (`key`, `!key`, `key=value`, `key!=value`, `in`, `notin`, comma = and)
//!   and `fieldSelector` (`metadata.name`, `metadata.namespace`);
//! - lists carry one global, monotonic `resourceVersion`; `limit` and `continue` paginate;
//!   `resourceVersion`/`resourceVersionMatch` on lists are accepted and served from the
//!   latest state (every version is "not older than" what was asked);
//! - `?watch=true`: newline-delimited `{"type": ..., "object": ...}` events after the given
//!   version, `BOOKMARK`s when `allowWatchBookmarks=true`, the stream ends after
//!   `timeoutSeconds`; a version older than the retained history (or newer than any issued)
//!   gets an `ERROR` event with a 410 `Expired` Status, which makes kube-runtime relist;
//! - with [`FakeApiConfig::rbac`], a request its ClusterRole rules do not grant gets 403
//!   `Forbidden`;
//! - a watch from version 0 (or none) starts with an `ADDED` per current object; with
//!   `sendInitialEvents=true` (streaming lists) they end with a bookmark annotated
//!   `k8s.io/initial-events-end`, as kube-runtime's `streaming_lists()` expects;
//! - with [`FakeApiConfig::tls`], HTTPS with a CA of its own, and 401 `Unauthorized` for an
//!   API request without the bearer token (`/version` and health stay anonymous).
//!
//! ```no_run
//! # async fn demo() -> Result<(), integration::fake_api::FakeApiError> {
//! use integration::fake_api::{FakeApiConfig, FakeApiServer};
//! let server = FakeApiServer::start("127.0.0.1:0".parse().unwrap(), FakeApiConfig::default()).await?;
//! server.apply_text("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n")?;
//! std::fs::write("/run/kubeconfig", server.kubeconfig()).ok();
//! # Ok(()) }
//! ```

mod api;
mod control;
mod error;
mod kinds;
mod rbac;
mod selector;
mod server;
mod shared;
mod store;
mod tls;
mod watch;

pub use error::FakeApiError;
pub use kinds::Kind;
pub use rbac::Grants;
pub use selector::{FieldSelector, LabelSelector};
pub use server::FakeApiServer;
pub use shared::{FakeApiConfig, RequestCounts, parse_documents};
pub use store::Applied;
pub use tls::TlsIdentity;
