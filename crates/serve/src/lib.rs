//! What the daemon serves over HTTP: health (`/healthz`, `/livez`), metrics, the debug
//! endpoint, and the health-check node ports of `externalTrafficPolicy: Local` Services.
//! [`DaemonObserver`] is the sync loop's observer that keeps the metrics and the health-check
//! servers in step with each sync.
#![deny(missing_docs)]

mod health;
mod http;
mod listener;
mod metrics;
mod node_ports;
mod observer;
mod process;
mod rest_client;
#[cfg(test)]
mod test_client;

pub use health::proxy_healthy;
pub use http::{Endpoints, VirtualServerOrigin, health_router, metrics_router, spawn};
pub use listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
pub use metrics::Metrics;
pub use node_ports::{HealthCheckServers, health_check_addresses};
pub use observer::DaemonObserver;
pub use rest_client::{RestClientLayer, RestClientService};
