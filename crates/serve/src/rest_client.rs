//! client-go's request metrics for the Kubernetes client, which the kubernetes-mixin "Proxy"
//! dashboard queries (`rest_client_requests_total`, `rest_client_request_duration_seconds`):
//! a tower layer under kube's client, timing each request to its response headers.

use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};

/// Labels of `rest_client_requests_total`, as client-go sets them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    code: String,
    method: String,
    host: String,
}

/// Labels of `rest_client_request_duration_seconds`, as client-go sets them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DurationLabels {
    verb: String,
    host: String,
}

/// The request duration histograms, by verb and host.
pub(crate) type DurationFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// client-go's buckets for the request duration.
fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0])
}

/// An empty duration family with client-go's buckets.
pub(crate) fn duration_family() -> DurationFamily {
    Family::new_with_constructor(duration_histogram as fn() -> Histogram)
}

/// A tower [`Layer`] recording every request of the service it wraps; give it to kube's
/// `ClientBuilder::with_layer`. Made by [`crate::Metrics::rest_client_layer`].
#[derive(Debug, Clone)]
pub struct RestClientLayer {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: DurationFamily,
}

impl<S> Layer<S> for RestClientLayer {
    type Service = RestClientService<S>;

    fn layer(&self, inner: S) -> RestClientService<S> {
        RestClientService { inner, metrics: self.clone() }
    }
}

/// The service [`RestClientLayer`] wraps around kube's HTTP stack.
#[derive(Debug, Clone)]
pub struct RestClientService<S> {
    inner: S,
    metrics: RestClientLayer,
}

impl<S, B, R> Service<Request<B>> for RestClientService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().to_string();
        let host = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = response.await;
            // client-go's label for a request that got no response.
            let code = result.as_ref().map_or_else(|_| "<error>".to_string(), |r| r.status().as_u16().to_string());
            metrics.requests.get_or_create(&RequestLabels { code, method: method.clone(), host: host.clone() }).inc();
            metrics
                .duration
                .get_or_create(&DurationLabels { verb: method, host })
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;

    use super::*;
    use crate::Metrics;

    /// Answers every request with `status`.
    struct Answer(u16);

    impl Service<Request<()>> for Answer {
        type Response = Response<()>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Response<()>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let mut response = Response::new(());
            *response.status_mut() = axum::http::StatusCode::from_u16(self.0).unwrap();
            std::future::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_code_method_and_host_and_timed_by_verb() {
        let metrics = Metrics::new();
        let layer = metrics.rest_client_layer();
        let request = |method: &str| {
            Request::builder().method(method).uri("https://10.0.0.1:6443/api/v1/services?watch=true").body(()).unwrap()
        };
        let mut ok = layer.layer(Answer(200));
        ok.call(request("GET")).await.unwrap();
        ok.call(request("GET")).await.unwrap();
        layer.layer(Answer(410)).call(request("GET")).await.unwrap();
        let facts = proxier::HealthFacts {
            pending_since: None,
            last_synced: None,
            last_queued: None,
            node_eligible: true,
            sync_failing: false,
        };
        let text = metrics.encode(&facts).unwrap();
        for line in [
            r#"rest_client_requests_total{code="200",method="GET",host="10.0.0.1:6443"} 2"#,
            r#"rest_client_requests_total{code="410",method="GET",host="10.0.0.1:6443"} 1"#,
            r#"rest_client_request_duration_seconds_count{verb="GET",host="10.0.0.1:6443"} 3"#,
            r#"rest_client_request_duration_seconds_bucket{le="60.0",verb="GET",host="10.0.0.1:6443"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
