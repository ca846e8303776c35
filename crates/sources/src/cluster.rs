//! Updates from an API server: kube-runtime watchers on Services, EndpointSlices and this
//! node's Node, with backoff; they survive relists, 410 Gone and disconnects and never end.

use std::fmt::Debug;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use model::{Change, Update};

use crate::relist::Tracker;

/// Upstream's selector for both Services and EndpointSlices: skip objects another proxy
/// handles and headless Services' slices. Every source applies the same selection
/// ([`NOT_PROXIED_LABELS`]); the watches let the API server do it.
pub(crate) const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// The labels [`PROXY_LABEL_SELECTOR`] excludes: a Service or EndpointSlice carrying one is not
/// this proxy's, whatever the label's value.
pub(crate) const NOT_PROXIED_LABELS: [&str; 2] =
    ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"];

/// The updates of the cluster `client` talks to, for node `node_name`. Errors are logged and
/// retried with kube-runtime's default backoff; the stream never ends.
pub fn cluster_updates(client: Client, node_name: &str) -> impl Stream<Item = Update> + Send + 'static {
    let labels = watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
    let node = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    stream::select_all([
        watch(Api::<Service>::all(client.clone()), labels.clone(), Update::Service),
        watch(Api::<EndpointSlice>::all(client.clone()), labels, Update::EndpointSlice),
        watch(Api::<Node>::all(client), node, Update::Node),
    ])
}

/// One watch, turned into updates by a [`Tracker`].
fn watch<K>(api: Api<K>, config: watcher::Config, wrap: fn(Change<K>) -> Update) -> BoxStream<'static, Update>
where
    K: Resource<DynamicType = ()> + Clone + Default + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    tracker_updates(watcher(api, config).default_backoff(), kind.to_string(), wrap).boxed()
}

/// Watch events (or errors) to updates: errors are logged (the watcher recovers on the next
/// poll, after the backoff), events go through a fresh [`Tracker`].
pub(crate) fn tracker_updates<K, S>(
    events: S,
    kind: String,
    wrap: fn(Change<K>) -> Update,
) -> impl Stream<Item = Update> + Send
where
    K: Resource + Default + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut tracker = Tracker::<K>::new();
    events
        .filter_map(move |event| {
            let out = match event {
                Ok(event) => Some(stream::iter(tracker.handle(event).into_iter().map(wrap))),
                Err(e) => {
                    tracing::warn!(kind = %kind, "watch failed, retrying: {e}");
                    None
                }
            };
            std::future::ready(out)
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file source's selection and the watches' selector name the same labels.
    #[test]
    fn the_selector_excludes_exactly_the_not_proxied_labels() {
        let excluded: Vec<&str> = PROXY_LABEL_SELECTOR.split(',').map(|t| t.trim_start_matches('!')).collect();
        assert_eq!(excluded, NOT_PROXIED_LABELS);
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::ResourceExt;

    fn svc(name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    #[tokio::test]
    async fn errors_do_not_end_the_stream_and_relists_diff() {
        use watcher::Event::*;
        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> = vec![
            Ok(Init),
            Ok(InitApply(svc("a", "1"))),
            Ok(InitApply(svc("b", "1"))),
            Ok(InitDone),
            Err(watcher::Error::NoResourceVersion),
            // After a 410 Gone the watcher relists from scratch.
            Ok(Init),
            Ok(InitApply(svc("b", "2"))),
            Ok(InitDone),
            Ok(Apply(svc("c", "3"))),
        ];
        let got: Vec<String> = tracker_updates(stream::iter(events), "Service".into(), Update::Service)
            .map(|u| match u {
                Update::Service(Change::Apply(s)) => format!("apply {}", s.name_any()),
                Update::Service(Change::Delete(s)) => format!("delete {}", s.name_any()),
                Update::Service(Change::Listed) => "listed".into(),
                other => format!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(got, ["apply a", "apply b", "listed", "apply b", "delete a", "listed", "apply c"]);
    }
}
