//! Kubernetes watches feeding the service model, and the sync loop that keeps the kernel in step.
//!
//! Three layers, composed as streams and one task:
//!
//! - Sources produce [`Update`]s: [`cluster_updates`] (kube-runtime watchers on Services,
//!   EndpointSlices and this node's Node, with upstream's selectors and backoff) or
//!   [`file_updates`] (standalone mode: a YAML file re-read when it changes). Both go through a
//!   [`Tracker`], so a relist yields only real changes and deletes what vanished.
//! - [`Shared`] holds the [`model::Model`]; [`Shared::feed`] applies an update at once.
//! - [`SyncLoop`] brings the kernel in step through a [`Kernel`]: nothing before the first
//!   complete lists, a full adopting sync first, then incremental syncs on changes (coalesced by
//!   `minSyncPeriod`) and a full reconcile against a fresh dump every `syncPeriod`.
//!
//! ```
//! use watcher::{Change, Shared, Update};
//! use model::{Config, Model};
//!
//! let shared = Shared::new(Model::new(Config::new("node-a")), "node-a");
//! let svc = serde_json::from_value(serde_json::json!({
//!     "metadata": {"namespace": "default", "name": "web"},
//!     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
//! })).unwrap();
//! shared.feed(Update::Service(Change::Apply(svc)));
//! assert_eq!(shared.with_model(|m| m.desired().len()), 1);
//! // The sync loop would still wait: no list is complete yet.
//! assert!(!shared.lists_complete());
//! ```
#![deny(missing_docs)]

mod cluster;
mod file;
mod filter;
mod kernel;
mod objects;
mod relist;
mod schedule;
mod shared;
mod sync;

pub use cluster::{PROXY_LABEL_SELECTOR, cluster_updates};
pub use file::file_updates;
pub use filter::{Filter, FilterWork};
pub use kernel::{Kernel, KernelError};
pub use objects::{Objects, ObjectsError};
pub use relist::{Change, Tracker};
pub use shared::{HealthFacts, SERVICE_NAME_LABEL, Shared, TRIGGER_TIME_ANNOTATION, Update};
pub use sync::{SyncLoop, SyncObserver, SyncReport, SyncSettings, step_kind};
