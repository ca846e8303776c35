//! The daemon's HTTP endpoints: `/healthz` and `/livez` on the health address, `/metrics` and
//! `/debug/virtual-servers` on the metrics address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use proxier::Shared;
use serde::Serialize;

use super::health;
use super::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct Endpoints {
    /// The model and health facts.
    pub shared: Arc<Shared>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Health timeout (twice the sync period).
    pub timeout: Duration,
    /// `/configz`'s answer: the configuration in use, as upstream shows it.
    pub configz: Arc<serde_json::Value>,
}

/// One line of `/debug/virtual-servers`: which Service port a virtual server serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VirtualServerOrigin {
    /// The virtual server as `ipvsadm` names it (`TCP 10.96.0.10:80`).
    pub virtual_server: String,
    /// `namespace/name` of its Service.
    pub service: String,
    /// The Service port's name (empty for an unnamed port).
    pub port: String,
}

/// The router of the health address.
pub fn health_router(endpoints: Endpoints) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/livez", get(livez)).with_state(endpoints)
}

/// The router of the metrics address.
pub fn metrics_router(endpoints: Endpoints) -> Router {
    // Upstream's metrics server also answers /healthz, /proxyMode and /configz.
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/proxyMode", get(|| async { "ipvs" }))
        .route("/configz", get(configz))
        .route("/debug/virtual-servers", get(virtual_servers))
        .with_state(endpoints)
}

/// Binds `addr` and serves `router` in a task; binding errors are returned (naming the address).
pub async fn spawn(what: &'static str, addr: SocketAddr, router: Router) -> Result<(), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}")))?;
    tracing::info!("serving {what} on {addr}");
    tokio::spawn(crate::listener::serve(listener, router, what));
    Ok(())
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response.headers_mut().insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    response
}

fn health_answer(endpoints: &Endpoints, with_node: bool) -> Response {
    let report = health::report(&endpoints.shared.health(), Instant::now(), endpoints.timeout, with_node);
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    endpoints.metrics.count_health(with_node, status.as_u16());
    json(status, serde_json::to_string(&report).unwrap_or_default())
}

async fn healthz(State(endpoints): State<Endpoints>) -> Response {
    health_answer(&endpoints, true)
}

async fn livez(State(endpoints): State<Endpoints>) -> Response {
    health_answer(&endpoints, false)
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    endpoints.metrics.set_pending_changes(endpoints.shared.pending_changes());
    match endpoints.metrics.encode(&endpoints.shared.health()) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")).into_response(),
    }
}

async fn configz(State(endpoints): State<Endpoints>) -> Response {
    json(StatusCode::OK, endpoints.configz.to_string())
}

async fn virtual_servers(State(endpoints): State<Endpoints>) -> Response {
    let list: Vec<VirtualServerOrigin> = endpoints.shared.with_model(|m| {
        m.desired()
            .virtual_servers()
            .map(|(id, d)| VirtualServerOrigin {
                virtual_server: id.to_string(),
                service: d.origin.service.to_string(),
                port: d.origin.port_name.clone(),
            })
            .collect()
    });
    json(StatusCode::OK, serde_json::to_string(&list).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Change, Update};

    fn endpoints() -> Endpoints {
        let shared = Arc::new(Shared::new(model::Model::new(model::Config::new("node-a")), "node-a"));
        let svc = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        shared.feed(Update::Service(Change::Apply(svc)));
        let configz = Arc::new(serde_json::json!({"kubeproxy.config.k8s.io": {"mode": "ipvs"}}));
        Endpoints { shared, metrics: Arc::new(Metrics::new()), timeout: Duration::from_secs(60), configz }
    }

    async fn call(router: Router, path: &str) -> (StatusCode, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let (status, body) = crate::test_client::get(addr, path).await.unwrap();
        server.abort();
        (StatusCode::from_u16(status).unwrap(), body)
    }

    #[tokio::test]
    async fn routes_answer() {
        let e = endpoints();
        // (router, path, status, text the body must contain)
        let cases: Vec<(Router, &str, StatusCode, &str)> = vec![
            // Nothing synced yet: not ready (issue 8, item 4), though alive.
            (health_router(e.clone()), "/healthz", StatusCode::SERVICE_UNAVAILABLE, "\"nodeEligible\":true"),
            (health_router(e.clone()), "/livez", StatusCode::OK, "\"lastUpdated\":\"0001-01-01T00:00:00Z\""),
            (health_router(e.clone()), "/metrics", StatusCode::NOT_FOUND, ""),
            (metrics_router(e.clone()), "/metrics", StatusCode::OK, "kubeproxy_sync_proxy_rules_duration_seconds"),
            (metrics_router(e.clone()), "/healthz", StatusCode::SERVICE_UNAVAILABLE, "\"nodeEligible\":true"),
            (metrics_router(e.clone()), "/proxyMode", StatusCode::OK, "ipvs"),
            (metrics_router(e.clone()), "/configz", StatusCode::OK, r#"{"kubeproxy.config.k8s.io":{"mode":"ipvs"}}"#),
            // Counted by code: the two /healthz answers above, one /livez.
            (metrics_router(e.clone()), "/metrics", StatusCode::OK, "kubeproxy_proxy_healthz_total{code=\"503\"} 2\n"),
            (metrics_router(e.clone()), "/metrics", StatusCode::OK, "kubeproxy_proxy_livez_total{code=\"200\"} 1\n"),
            (
                metrics_router(e.clone()),
                "/metrics",
                StatusCode::OK,
                "kubeproxy_sync_proxy_rules_service_changes_pending 1\n",
            ),
            (
                metrics_router(e.clone()),
                "/debug/virtual-servers",
                StatusCode::OK,
                r#"[{"virtual_server":"TCP 10.96.0.10:80","service":"default/web","port":"http"}]"#,
            ),
        ];
        for (router, path, status, needle) in cases {
            let (got, body) = call(router, path).await;
            assert_eq!(got, status, "{path}");
            assert!(body.contains(needle), "{path}: {body}");
        }
    }
}
