//! The proxier: keeps the kernel in step with the model. The stage of the data flow after the
//! sources and the model (sources, model, plan, kernel).
//!
//! - [`Shared`] holds the [`model::Model`]; [`Shared::feed`] applies one [`model::Update`] from
//!   a source at once (the model recomputes only the Service concerned) and wakes the loop.
//! - [`SyncLoop`] brings the kernel in step through a [`Kernel`] and a [`Filter`]: only
//!   additions while the first lists arrive, a full sync once they are complete, then incremental syncs on
//!   changes (coalesced by `minSyncPeriod`) and on what the verification ([`KernelReader`],
//!   [`VerifySettings`]) finds, read a slice at a time beside the loop. After each sync it forgets the conntrack entries its changes made stale
//!   (connectionless flows only, as upstream).
//! - [`NetlinkKernel`] is the real [`Kernel`] (IPVS over generic netlink, the dummy link over
//!   rtnetlink); [`NftFilter`] the real [`Filter`] (the `netfilter` crate's table);
//!   [`filter_state`], [`filter_updates`] and [`sweep_updates`] translate the model's desired
//!   state into that crate's vocabulary.
//!
//! ```
//! use model::{Change, Config, Model, Update};
//! use proxier::Shared;
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

mod blocking;
mod filter;
mod filter_state;
mod kernel;
mod netlink;
mod nft;
mod ownership;
mod schedule;
mod shared;
mod stale;
mod sync;
mod timeouts;
mod verify;

pub use filter::{Filter, FilterStarter, FilterWork};
pub use filter_state::{filter_state, filter_updates, sweep_updates};
pub use kernel::{Kernel, KernelError};
pub use netlink::{NetlinkKernel, NetlinkReader};
pub use nft::NftFilter;
pub use ownership::{OwnershipError, OwnershipRecord};
pub use shared::{HealthFacts, Shared};
pub use sync::{SyncLoop, SyncObserver, SyncReport, SyncSettings};
pub use timeouts::ensure_timeouts;
pub use verify::{KernelReader, VerifySettings};
