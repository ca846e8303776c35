//! The proxy's inputs, each a stream of [`model::Update`]s that never ends: the first source
//! stage of the data flow (sources, model, plan, kernel).
//!
//! - [`cluster_updates`]: kube-runtime watchers on Services and EndpointSlices (upstream's
//!   selector) and this node's Node, with kube-runtime's default backoff.
//! - [`file_updates`]: standalone mode, a multi-document YAML file re-read when it changes.
//! - [`node_address_updates`]: the node's addresses, followed by rtnetlink notifications.
//!
//! Watches and the file go through a relist tracker that keeps only each object's
//! resourceVersion, so a relist (after 410 Gone, a reconnect, or a re-read) yields only the
//! objects that changed and deletes for the ones that vanished.
//!
//! ```no_run
//! use futures::StreamExt;
//!
//! # async fn demo() {
//! let mut updates = sources::file_updates("objects.yaml".into(), "node-a", std::time::Duration::from_secs(1))
//!     .boxed();
//! while let Some(update) = updates.next().await {
//!     println!("{update:?}");
//! }
//! # }
//! ```
#![deny(missing_docs)]

mod addresses;
mod cluster;
mod file;
mod objects;
mod relist;
pub mod yaml;

pub use addresses::{AddressesError, node_address_updates, node_addresses};
pub use cluster::cluster_updates;
pub use file::file_updates;
pub use objects::{Objects, ObjectsError};
