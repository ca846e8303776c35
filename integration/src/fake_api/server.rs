//! The server handle: binds, serves, stops and resumes; and the in-process control calls.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, delete, get, post};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::error::FakeApiError;
use super::kinds::Kind;
use super::shared::{FakeApiConfig, RequestCounts, Shared, parse_documents};
use super::store::Applied;
use super::{api, control, tls};

/// A running fake Kubernetes API server (plain HTTP, or HTTPS with a token when its config has
/// a TLS identity), and the handle to change its objects.
///
/// The objects outlive [`FakeApiServer::stop`]: [`FakeApiServer::resume`] serves the same
/// state (and resourceVersions) on the same address again, as an API server coming back.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    serving: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(api::version))
        .route("/healthz", get(api::healthy))
        .route("/livez", get(api::healthy))
        .route("/readyz", get(api::healthy))
        .route("/api", get(api::core_versions))
        .route("/apis", get(api::groups))
        .route("/api/{*rest}", any(api::resource))
        .route("/apis/{*rest}", any(api::resource))
        .route("/fake/apply", post(control::apply))
        .route("/fake/objects/{kind}/{name}", delete(control::delete_cluster_scoped))
        .route("/fake/objects/{kind}/{namespace}/{name}", delete(control::delete_namespaced))
        .route("/fake/compact", post(control::compact))
        .route("/fake/hangup", post(control::hangup))
        .route("/fake/state", get(control::state))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), tls::authenticate))
        .with_state(shared)
}

impl FakeApiServer {
    /// Binds `address` (port 0 picks a free port) and serves an empty cluster.
    pub async fn start(address: SocketAddr, config: FakeApiConfig) -> Result<FakeApiServer, FakeApiError> {
        let mut server = FakeApiServer { shared: Arc::new(Shared::new(config)), address, serving: None };
        server.resume().await?;
        Ok(server)
    }

    /// The address served (with the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://address` (`https://` with TLS), the `server` of a kubeconfig.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// A kubeconfig (YAML) whose current context points at this server without credentials
    /// (for a plain HTTP server; with TLS, write the CA and token to files and name them).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// Creates or replaces objects from JSON or YAML text (multi-document, `kind: List` too);
    /// stops at the first refused object.
    pub fn apply_text(&self, text: &str) -> Result<Vec<Applied>, FakeApiError> {
        self.shared.apply(parse_documents(text)?)
    }

    /// Creates or replaces one object given as JSON.
    pub fn apply(&self, object: Value) -> Result<Applied, FakeApiError> {
        let mut applied = self.shared.apply(vec![object])?;
        applied.pop().ok_or(FakeApiError::BadDocument { index: 0, reason: "nothing applied".into() })
    }

    /// Deletes one object (`namespace` is ignored for cluster-scoped kinds); returns the
    /// deletion's resourceVersion.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<u64, FakeApiError> {
        self.shared.delete(kind, namespace, name)
    }

    /// Forgets the watch history and hangs up every watch: clients must relist (their watch
    /// restart gets a 410 `Expired` event).
    pub fn compact(&self) {
        self.shared.compact();
    }

    /// Ends every open watch stream; clients reconnect from the version they had.
    pub fn hang_up_watches(&self) {
        self.shared.hang_up_watches();
    }

    /// Holds (`true`) or lets go every list request that continues a paginated list: the
    /// first page of each list arrives, the rest waits, as a big cluster's lists arriving
    /// slowly.
    pub fn hold_continued_lists(&self, hold: bool) {
        self.shared.hold_continued.send_replace(hold);
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Requests answered so far, and watches open now.
    pub fn requests(&self) -> RequestCounts {
        self.shared.counts()
    }

    /// Whether the server accepts connections.
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// Stops serving: closes the listener, ends every watch and lets other requests finish,
    /// so that clients then see refused connections. The objects are kept.
    pub async fn stop(&mut self) {
        if let Some((shutdown, task)) = self.serving.take() {
            let _ = shutdown.send(());
            self.shared.hang_up_watches();
            let _ = task.await;
        }
    }

    /// Serves again on the same address after [`FakeApiServer::stop`] (no-op when serving).
    pub async fn resume(&mut self) -> Result<(), FakeApiError> {
        if self.serving.is_some() {
            return Ok(());
        }
        let bind = |source| FakeApiError::Bind { address: self.address, source };
        let listener = TcpListener::bind(self.address).await.map_err(bind)?;
        self.address = listener.local_addr().map_err(bind)?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = router(self.shared.clone());
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = match self.shared.config.tls.clone() {
            Some(identity) => {
                let tls = identity.listener(listener);
                tokio::spawn(async move {
                    if let Err(error) = axum::serve(tls, app).with_graceful_shutdown(stopped).await {
                        tracing::warn!(%error, "fake API server stopped with an error");
                    }
                })
            }
            None => tokio::spawn(async move {
                // As the real API server (Go sets TCP_NODELAY on every connection): with Nagle on, a
                // watch event written while the previous one awaits the client's delayed ACK is held
                // for up to 40 ms, which the daemon's change latency would wrongly include.
                let listener = listener.tap_io(|tcp| {
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::warn!(%error, "cannot set TCP_NODELAY on a fake API connection");
                    }
                });
                if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                    tracing::warn!(%error, "fake API server stopped with an error");
                }
            }),
        };
        self.serving = Some((shutdown, task));
        Ok(())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some((shutdown, task)) = self.serving.take() {
            let _ = shutdown.send(());
            self.shared.hang_up_watches();
            task.abort();
        }
    }
}
