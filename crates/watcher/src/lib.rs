//! Kubernetes watches feeding the model, and the sync loop that keeps the kernel in step.
#![deny(missing_docs)]

mod cluster;
mod file;
mod kernel;
mod objects;
mod relist;
mod schedule;
mod shared;
mod sync;

pub use cluster::{PROXY_LABEL_SELECTOR, cluster_updates};
pub use file::file_updates;
pub use kernel::{Kernel, KernelError};
pub use objects::{Objects, ObjectsError};
pub use relist::{Change, Tracker};
pub use shared::{HealthFacts, SERVICE_NAME_LABEL, Shared, TRIGGER_TIME_ANNOTATION, Update};
pub use sync::{SyncLoop, SyncObserver, SyncReport, SyncSettings, step_kind};
