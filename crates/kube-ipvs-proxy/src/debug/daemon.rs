//! Asks a running daemon which Service each virtual server serves (`GET /debug/virtual-servers`
//! on its metrics address), so that `debug status` can name them under the kernel's entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use serve::VirtualServerOrigin;

/// The daemon's endpoint naming each virtual server's Service.
const PATH: &str = "/debug/virtual-servers";

/// Why the daemon's list of virtual servers could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Nothing listens there, or the connection failed: most often no daemon runs.
    #[error("cannot reach a daemon at {addr}")]
    Unreachable {
        /// Where it was asked.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// It did not answer in time.
    #[error("the daemon at {addr} did not answer {PATH} within {timeout:?}")]
    Timeout {
        /// Where it was asked.
        addr: SocketAddr,
        /// How long it had.
        timeout: Duration,
    },
    /// It answered with an error status.
    #[error("the daemon at {addr} answered {status} to {PATH}")]
    Status {
        /// Where it was asked.
        addr: SocketAddr,
        /// Its answer.
        status: StatusCode,
    },
    /// The answer's body could not be read or is not the expected JSON.
    #[error("the daemon at {addr} sent an unreadable answer to {PATH}")]
    Body {
        /// Where it was asked.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DaemonError {
    /// Whether the error just means that no daemon runs at that address (not worth a warning).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DaemonError::Unreachable { .. })
    }
}

/// Fetches the daemon's list of virtual servers and the Service port each serves.
pub async fn origins(addr: SocketAddr, timeout: Duration) -> Result<Vec<VirtualServerOrigin>, DaemonError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{PATH}")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| DaemonError::Body { addr, source: e.into() })?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|source| DaemonError::Unreachable { addr, source })?;
        if !response.status().is_success() {
            return Err(DaemonError::Status { addr, status: response.status() });
        }
        let body = response.into_body().collect().await.map_err(|e| DaemonError::Body { addr, source: e.into() })?;
        serde_json::from_slice(&body.to_bytes()).map_err(|e| DaemonError::Body { addr, source: e.into() })
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| DaemonError::Timeout { addr, timeout })?
}

/// The comment lines for each virtual server (by its `ipvsadm`-style name, as the daemon sends
/// it): `service namespace/name:port`, or `service namespace/name` for an unnamed port.
pub fn comments_by_virtual_server(origins: &[VirtualServerOrigin]) -> HashMap<&str, Vec<String>> {
    let mut comments: HashMap<&str, Vec<String>> = HashMap::new();
    for origin in origins {
        let line = match origin.port.as_str() {
            "" => format!("service {}", origin.service),
            port => format!("service {}:{port}", origin.service),
        };
        comments.entry(origin.virtual_server.as_str()).or_default().push(line);
    }
    comments
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    /// Serves `router` on a free local port for the rest of the test.
    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    fn daemon_answering(status: StatusCode, body: &'static str) -> Router {
        Router::new().route(PATH, get(move || async move { (status, body) }))
    }

    #[tokio::test]
    async fn reads_the_daemons_list() {
        let body = r#"[{"virtual_server":"TCP 10.96.0.10:80","service":"default/web","port":"http"},
                       {"virtual_server":"UDP 10.96.0.53:53","service":"kube-system/kube-dns","port":""}]"#;
        let addr = serve(daemon_answering(StatusCode::OK, body)).await;
        let origins = origins(addr, Duration::from_secs(5)).await.unwrap();
        let comments = comments_by_virtual_server(&origins);
        assert_eq!(comments["TCP 10.96.0.10:80"], ["service default/web:http"]);
        assert_eq!(comments["UDP 10.96.0.53:53"], ["service kube-system/kube-dns"]);
    }

    /// The daemon's own endpoint, on a model holding one Service: the two sides agree.
    #[tokio::test]
    async fn agrees_with_the_daemons_endpoint() {
        let shared =
            std::sync::Arc::new(proxier::Shared::new(model::Model::new(model::Config::new("node-a")), "node-a"));
        let svc = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        shared.feed(model::Update::Service(model::Change::Apply(svc)));
        let endpoints = serve::Endpoints {
            shared,
            metrics: std::sync::Arc::new(serve::Metrics::new()),
            timeout: Duration::from_secs(60),
            configz: std::sync::Arc::new(serde_json::Value::Null),
        };
        let addr = serve(serve::metrics_router(endpoints)).await;
        let origins = origins(addr, Duration::from_secs(5)).await.unwrap();
        let comments = comments_by_virtual_server(&origins);
        let tcp = ipvs::VirtualServerId::Tuple {
            protocol: ipvs::Protocol::Tcp,
            addr: "10.96.0.10".parse().unwrap(),
            port: 80,
        };
        let udp = ipvs::VirtualServerId::Tuple {
            protocol: ipvs::Protocol::Udp,
            addr: "10.96.0.10".parse().unwrap(),
            port: 53,
        };
        assert_eq!(comments[tcp.to_string().as_str()], ["service default/web:http"]);
        assert_eq!(comments[udp.to_string().as_str()], ["service default/web:dns"]);
        assert_eq!(comments.len(), 2);
    }

    #[tokio::test]
    async fn failures_are_told_apart() {
        let broken = serve(daemon_answering(StatusCode::OK, "[{\"virtual_server\": 5}]")).await;
        let failing = serve(daemon_answering(StatusCode::INTERNAL_SERVER_ERROR, "boom")).await;
        let silent = serve(Router::new().route(
            PATH,
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "[]"
            }),
        ))
        .await;
        // A port nobody listens on: bind one, learn its number, close it.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let cases = [
            (broken, "unreadable answer", false),
            (failing, "answered 500 Internal Server Error", false),
            (silent, "did not answer /debug/virtual-servers within 300ms", false),
            (closed, "cannot reach a daemon at", true),
        ];
        for (addr, expected, unreachable) in cases {
            let err = origins(addr, timeout).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{addr}: {err}");
            assert_eq!(err.is_unreachable(), unreachable, "{err}");
        }
    }
}
