//! A typed client for the Linux kernel's IPVS tables and the `kube-ipvs0` dummy link.
//!
//! Knows nothing of Kubernetes. Without the default `client` feature the crate is pure data
//! and wire codec (no I/O, no tokio).
#![deny(missing_docs)]

mod types;

pub use types::*;
