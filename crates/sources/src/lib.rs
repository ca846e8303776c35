//! The proxy's inputs, each a stream of [`model::Update`]s that never ends: the first source
//! stage of the data flow (sources, model, plan, kernel).
//!
//! - [`cluster_updates`]: kube-runtime watchers on Services and EndpointSlices (upstream's
//!   selector) and this node's Node, with kube-runtime's default backoff.
//! - [`file_updates`]: standalone mode, a multi-document YAML file re-read when it changes.
//! - [`node_address_updates`]: the node's addresses, followed by rtnetlink notifications.
//!
//! Watches and the file go through a [`Tracker`], so a relist (after 410 Gone, a reconnect, or
//! a re-read) yields only the objects that changed and deletes for the ones that vanished.
//!
//! ```
//! use k8s_openapi::api::core::v1::Service;
//! use kube::runtime::watcher::Event;
//! use model::Change;
//! use sources::Tracker;
//!
//! let svc: Service = serde_json::from_value(serde_json::json!({
//!     "metadata": {"namespace": "default", "name": "web", "resourceVersion": "7"}
//! })).unwrap();
//! let mut tracker = Tracker::new();
//! tracker.handle(Event::Init);
//! assert!(matches!(tracker.handle(Event::InitApply(svc.clone()))[..], [Change::Apply(_)]));
//! assert_eq!(tracker.handle(Event::InitDone), vec![Change::Listed]);
//! // A relist repeating the same resourceVersion yields nothing for it.
//! tracker.handle(Event::Init);
//! assert!(tracker.handle(Event::InitApply(svc)).is_empty());
//! ```
#![deny(missing_docs)]

mod addresses;
mod cluster;
mod file;
mod objects;
mod relist;
pub mod yaml;

pub use addresses::{AddressesError, is_node_address, node_address_updates, node_addresses};
pub use cluster::{PROXY_LABEL_SELECTOR, cluster_updates};
pub use file::file_updates;
pub use objects::{Objects, ObjectsError};
pub use relist::Tracker;
