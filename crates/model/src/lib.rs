//! The service-state model: Kubernetes Services, EndpointSlices and this node in, the exact
//! desired IPVS state and a minimal, ordered plan out. Pure: no I/O, no async, no root.
//!
//! - [`Model`] holds the objects and keeps a [`DesiredState`] current. Each update recomputes only
//!   the Service it concerns; [`Model::take_changes`] says which virtual servers and addresses
//!   may have changed.
//! - [`plan`] compares a [`DesiredState`] with an [`Observed`] kernel state, all of it or only
//!   the changes ([`Scope`]), and returns the [`Step`]s to run in order. [`Observed::apply`]
//!   records a step that succeeded.
//!
//! Semantics follow upstream kube-proxy's IPVS mode, except where upstream is wrong:
//! `externalTrafficPolicy: Local` with no local endpoint gets no real servers, weights left at 0
//! are restored, and only this proxy's virtual servers are ever deleted.
//!
//! ```
//! use model::{Config, Model, Observed, Scope, GracefulRemovals, Step};
//! use std::time::Duration;
//!
//! let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
//!     "metadata": {"namespace": "default", "name": "web"},
//!     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
//! })).unwrap();
//! let mut model = Model::new(Config::new("node-a"));
//! assert!(model.upsert_service(&svc).is_empty());
//! let mut observed = Observed::new();
//! let plan = model.plan(&observed, &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO);
//! assert_eq!(plan.steps[0], Step::Bind("10.96.0.10".parse().unwrap()));
//! for step in &plan.steps { observed.apply(step); }
//! assert!(model.plan(&observed, &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO).is_empty());
//! ```
#![deny(missing_docs)]

mod build;
mod changes;
mod claims;
mod config;
mod desired;
mod endpoints;
mod graceful;
mod model;
mod names;
mod observed;
mod plan;
mod prefix;
mod real_servers;
mod serde_pairs;
mod service;
mod service_slices;
mod update;
mod warning;

pub use changes::{Changes, Scope};
pub use config::{Config, KNOWN_SCHEDULERS, NodePortAddress, is_known_scheduler};
pub use desired::{DesiredState, DesiredVirtualServer, Masquerade, ServiceInfo, VirtualServerKind};
pub use graceful::GracefulRemovals;
pub use model::{Model, ModelStats};
pub use names::{ServiceKey, ServicePortRef};
pub use observed::{Observed, ObservedRealServer, ObservedVirtualServer, VerifiedVirtualServers};
pub use plan::{Plan, PlanPolicy, Step, operation_target, plan};
pub use prefix::{PrefixError, parse_prefix};
pub use real_servers::{RealServerKey, RealServers};
pub use update::{Change, SERVICE_NAME_LABEL, Update};
pub use warning::Warning;
