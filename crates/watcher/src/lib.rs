//! Kubernetes watches feeding the model, and the sync loop that keeps the kernel in step.
#![deny(missing_docs)]

mod kernel;
mod objects;
mod relist;

pub use kernel::{Kernel, KernelError};
pub use objects::{Objects, ObjectsError};
pub use relist::{Change, Tracker};
