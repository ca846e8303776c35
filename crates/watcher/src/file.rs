//! Updates from a YAML file (standalone mode): the file is read at start and again whenever its
//! modification time or size changes; each read is diffed against the previous one, so the model
//! sees the same incremental upserts and deletes as with a cluster.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::objects::Objects;
use crate::relist::Tracker;
use crate::shared::Update;

/// How a file source reads its file.
struct FileSource {
    path: PathBuf,
    node_name: String,
    poll: Duration,
    stamp: Option<(SystemTime, u64)>,
    services: Tracker<Service>,
    slices: Tracker<EndpointSlice>,
    nodes: Tracker<Node>,
    first: bool,
    missing_reported: bool,
}

/// The updates from `path`, checked every `poll`. A file that cannot be read or parsed is
/// logged and skipped (the previous objects stay); until a first good read no list is complete,
/// so nothing is written to the kernel. The stream never ends.
pub fn file_updates(path: PathBuf, node_name: &str, poll: Duration) -> impl Stream<Item = Update> + Send + 'static {
    let source = FileSource {
        path,
        node_name: node_name.to_string(),
        poll,
        stamp: None,
        services: Tracker::new(),
        slices: Tracker::new(),
        nodes: Tracker::new(),
        first: true,
        missing_reported: false,
    };
    stream::unfold(source, |mut source| async move {
        let updates = source.next_read().await;
        Some((stream::iter(updates), source))
    })
    .flatten()
}

impl FileSource {
    /// Waits for the file to change (not on the first call) and returns the updates it means.
    async fn next_read(&mut self) -> Vec<Update> {
        loop {
            if !self.first {
                tokio::time::sleep(self.poll).await;
            }
            self.first = false;
            let stamp = match tokio::fs::metadata(&self.path).await {
                Ok(meta) => (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()),
                Err(e) => {
                    // Once per disappearance, not every poll.
                    if self.stamp.take().is_some() || !std::mem::replace(&mut self.missing_reported, true) {
                        tracing::warn!(path = %self.path.display(), "cannot read objects file: {e}");
                    }
                    continue;
                }
            };
            if self.stamp == Some(stamp) {
                continue;
            }
            self.stamp = Some(stamp);
            let objects = match tokio::fs::read_to_string(&self.path).await {
                Ok(text) => Objects::parse(&text).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match objects {
                Ok(objects) => return self.diff(objects),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "objects file skipped, keeping the previous objects: {e}")
                }
            }
        }
    }

    /// The updates taking the trackers from the previous read to `objects`.
    fn diff(&mut self, objects: Objects) -> Vec<Update> {
        tracing::info!(
            path = %self.path.display(),
            services = objects.services.len(),
            endpoint_slices = objects.endpoint_slices.len(),
            skipped = objects.skipped.len(),
            "objects file read"
        );
        let mut out = Vec::new();
        relist(&mut self.services, objects.services, Update::Service, &mut out);
        relist(&mut self.slices, objects.endpoint_slices, Update::EndpointSlice, &mut out);
        let node_name = &self.node_name;
        let nodes = objects.nodes.into_iter().filter(|n| n.name_any() == *node_name).collect();
        relist(&mut self.nodes, nodes, Update::Node, &mut out);
        out
    }
}

/// Feeds a whole list through a tracker as a relist, so only differences come out.
fn relist<K: kube::Resource + Default>(
    tracker: &mut Tracker<K>,
    objects: Vec<K>,
    wrap: fn(crate::relist::Change<K>) -> Update,
    out: &mut Vec<Update>,
) {
    let events = std::iter::once(Event::Init).chain(objects.into_iter().map(Event::InitApply)).chain([Event::InitDone]);
    for event in events {
        out.extend(tracker.handle(event).into_iter().map(wrap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relist::Change;

    fn summary(u: &Update) -> String {
        match u {
            Update::Service(Change::Apply(s)) => format!("apply service {}", s.name_any()),
            Update::Service(Change::Delete(s)) => format!("delete service {}", s.name_any()),
            Update::EndpointSlice(Change::Apply(s)) => format!("apply slice {}", s.name_any()),
            Update::EndpointSlice(Change::Delete(s)) => format!("delete slice {}", s.name_any()),
            Update::Node(Change::Apply(n)) => format!("apply node {}", n.name_any()),
            Update::Node(Change::Delete(n)) => format!("delete node {}", n.name_any()),
            Update::Service(Change::Listed) => "listed services".into(),
            Update::EndpointSlice(Change::Listed) => "listed slices".into(),
            Update::Node(Change::Listed) => "listed nodes".into(),
        }
    }

    fn service(name: &str, ip: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    #[tokio::test]
    async fn rereads_yield_only_differences() {
        let dir = std::env::temp_dir().join(format!("watcher-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("objects.yaml");
        let node = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n";
        std::fs::write(&path, format!("{}{}{node}", service("a", "10.96.0.1"), service("b", "10.96.0.2"))).unwrap();
        let mut updates = Box::pin(file_updates(path.clone(), "node-a", Duration::from_millis(20)));
        let mut next = async |n: usize| {
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(summary(&updates.next().await.unwrap()));
            }
            got
        };
        assert_eq!(
            next(6).await,
            [
                "apply service a",
                "apply service b",
                "listed services",
                "listed slices",
                "apply node node-a",
                "listed nodes"
            ]
        );
        // Change b, drop a, add c; a different size guarantees a new stamp.
        std::fs::write(&path, format!("{}{}{node}", service("b", "10.96.0.22"), service("c", "10.96.0.3"))).unwrap();
        assert_eq!(
            next(5).await,
            ["apply service b", "apply service c", "delete service a", "listed services", "listed slices"]
        );
        assert_eq!(next(1).await, ["listed nodes"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
