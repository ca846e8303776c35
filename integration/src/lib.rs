//! Helpers for the tests and benches that need a real kernel (IPVS, dummy and veth links).
//!
//! They run inside the VM that `integration/vm-run` boots, as root; `integration/test` runs every
//! test binary of this crate there with `--ignored`. Each test isolates itself in a fresh network
//! namespace ([`in_netns`]), so tests run in parallel without seeing each other's IPVS tables or
//! links; backends are further namespaces behind veth pairs ([`Backend`]); [`ipvsadm`] runs the
//! real `ipvsadm` as the independent peer to cross-check against.
#![deny(missing_docs)]

mod backend;
mod command;
mod kernel;
mod netns;
mod proxy;
mod rules;
mod stalls;

pub mod fake_api;

pub use backend::{Backend, BackendError, ask_name};
pub use command::{CommandError, ip, ipvsadm, ipvsadm_restore, run};
pub use kernel::{before_6_2, kernel_release};
pub use netns::in_netns;
pub use proxy::proxy_binary;
pub use rules::{ipvsadm_args, restore_script};
pub use stalls::{StallProbe, Stalls};
