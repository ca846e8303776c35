//! A typed client for the Linux kernel's IPVS tables and the `kube-ipvs0` dummy link.
//!
//! Knows nothing of Kubernetes. Without the default `client` feature the crate is pure data
//! and wire codec (no I/O, no tokio): [`types`](crate::VirtualServer), [`Error`], and [`wire`].
//!
//! With `client`, [`Client`] talks generic netlink to the kernel's IPVS family over one socket:
//! single calls, whole-table dumps ([`Client::table`]) and pipelined batches
//! ([`Client::apply`]); [`DummyLink`] manages the dummy link that holds service addresses;
//! [`SockoptReader`] counts the virtual servers, and reads one IPv4 virtual server's real
//! servers, each in one system call (IPVS's socket options) instead of a dump.
//!
//! [`listing`] prints a [`Table`] exactly as `ipvsadm -Ln` does (pure; `debug status` uses it).
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn demo() -> ipvs::Result<()> {
//! use ipvs::{Client, Operation, Protocol, RealServer, VirtualServer, VirtualServerId};
//! let ipvs = Client::connect().await?;
//! let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: "10.96.0.10".parse().unwrap(), port: 80 };
//! let results = ipvs
//!     .apply(&[
//!         Operation::AddVirtualServer(VirtualServer::new(id, "rr")),
//!         Operation::AddRealServer(id, RealServer::new("10.244.1.2".parse().unwrap(), 8080, 1)),
//!     ])
//!     .await?;
//! for r in results {
//!     r?;
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
pub mod listing;
mod scheduler;
mod types;
pub mod wire;

#[cfg(feature = "client")]
mod batch;
#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod link;
#[cfg(feature = "client")]
mod link_batch;
#[cfg(feature = "client")]
mod socket;
#[cfg(feature = "client")]
mod sockopt;

pub use error::{Error, ErrorKind, Result};
pub use scheduler::{KNOWN_SCHEDULERS, Scheduler};
pub use types::{
    ConnectionCounts, Family, ForwardMethod, Info, Operation, Protocol, RealServer, RealServerEntry, RealServerId,
    ServiceFlags, Stats, Table, Timeouts, TunnelType, VirtualServer, VirtualServerEntry, VirtualServerId,
};

#[cfg(feature = "client")]
pub use client::Client;
#[cfg(feature = "client")]
pub use link::DummyLink;
#[cfg(feature = "client")]
pub use socket::ClientOptions;
#[cfg(feature = "client")]
pub use sockopt::SockoptReader;
