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

use crate::objects::{Object, ObjectsError, each_object};
use crate::relist::Tracker;
use model::Update;

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
    let source = FileSource::new(path, node_name, poll);
    stream::unfold(source, |mut source| async move {
        let updates = source.next_read().await;
        Some((stream::iter(updates), source))
    })
    .flatten()
}

impl FileSource {
    /// Nothing read yet.
    fn new(path: PathBuf, node_name: &str, poll: Duration) -> FileSource {
        FileSource {
            path,
            node_name: node_name.to_string(),
            poll,
            stamp: None,
            services: Tracker::new(),
            slices: Tracker::new(),
            nodes: Tracker::new(),
            first: true,
            missing_reported: false,
        }
    }

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
            let text = match tokio::fs::read_to_string(&self.path).await {
                Ok(text) => text,
                Err(e) => {
                    // Not recorded as read: the next poll tries again, changed or not.
                    tracing::warn!(path = %self.path.display(), "cannot read objects file: {e}");
                    continue;
                }
            };
            // A file read but refused (not valid objects) is not parsed again until it changes.
            self.stamp = Some(stamp);
            match self.diff(&text) {
                Ok(updates) => return updates,
                Err(e) => tracing::warn!(
                    path = %self.path.display(),
                    "objects file skipped, keeping the previous objects: {e}"
                ),
            }
        }
    }

    /// The updates taking the trackers from the previous read to the objects of `text`, which
    /// are compared one at a time (a large file never has all its objects in memory). A file
    /// with an error changes nothing.
    fn diff(&mut self, text: &str) -> Result<Vec<Update>, ObjectsError> {
        let saved = (self.services.clone(), self.slices.clone(), self.nodes.clone());
        let FileSource { services, slices, nodes, node_name, .. } = self;
        let mut out = Vec::new();
        let (mut counts, mut skipped) = ([0usize; 2], 0usize);
        services.handle(Event::Init);
        slices.handle(Event::Init);
        nodes.handle(Event::Init);
        let read = each_object(text, |object| match object {
            Object::Service(o) => {
                counts[0] += 1;
                out.extend(services.handle(Event::InitApply(o)).into_iter().map(Update::Service));
            }
            Object::EndpointSlice(o) => {
                counts[1] += 1;
                out.extend(slices.handle(Event::InitApply(o)).into_iter().map(Update::EndpointSlice));
            }
            Object::Node(o) if o.name_any() == *node_name => {
                out.extend(nodes.handle(Event::InitApply(o)).into_iter().map(Update::Node));
            }
            Object::Node(_) | Object::Skipped(_) => skipped += 1,
        });
        if let Err(e) = read {
            (self.services, self.slices, self.nodes) = saved;
            return Err(e);
        }
        out.extend(services.handle(Event::InitDone).into_iter().map(Update::Service));
        out.extend(slices.handle(Event::InitDone).into_iter().map(Update::EndpointSlice));
        out.extend(nodes.handle(Event::InitDone).into_iter().map(Update::Node));
        tracing::info!(
            path = %self.path.display(),
            services = counts[0],
            endpoint_slices = counts[1],
            skipped,
            changes = out.len().saturating_sub(3),
            "objects file read"
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Change;

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
            Update::NodeAddresses(a) => format!("node addresses {a:?}"),
            Update::Unbound(a) => format!("unbound {a:?}"),
        }
    }

    fn service(name: &str, ip: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    #[tokio::test]
    async fn rereads_yield_only_differences() {
        let dir = std::env::temp_dir().join(format!("sources-file-test-{}", std::process::id()));
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
                "apply node node-a",
                "listed services",
                "listed slices",
                "listed nodes"
            ]
        );
        // Change b, drop a, add c; a different size guarantees a new stamp.
        std::fs::write(&path, format!("{}{}{node}", service("b", "10.96.0.22"), service("c", "10.96.0.3"))).unwrap();
        assert_eq!(
            next(6).await,
            [
                "apply service b",
                "apply service c",
                "delete service a",
                "listed services",
                "listed slices",
                "listed nodes"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 8, item 8: a read that failed is retried at the next poll even when the file's
    /// modification time and size stay the same (they were recorded before the read).
    #[tokio::test]
    async fn a_failed_read_is_retried() {
        let dir = std::env::temp_dir().join(format!("sources-retry-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("objects.yaml");
        let good = service("a", "10.96.0.1");
        // Not UTF-8, the same length as the good text: the read fails, the stamp would not change.
        std::fs::write(&path, vec![0xff; good.len()]).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut updates = Box::pin(file_updates(path.clone(), "node-a", Duration::from_millis(20)));
        let first = tokio::time::timeout(Duration::from_millis(200), updates.next()).await;
        assert!(first.is_err(), "nothing from an unreadable file: {first:?}");
        std::fs::write(&path, &good).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), updates.next()).await;
        assert_eq!(next.ok().flatten().as_ref().map(summary), Some("apply service a".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A broken file changes nothing: its read is refused (so it was read), the trackers keep
    /// the last good objects, and the next good file is diffed against those.
    #[test]
    fn a_broken_file_changes_nothing() {
        let mut source = FileSource::new(PathBuf::from("objects.yaml"), "node-a", Duration::from_secs(1));
        let summaries = |updates: Vec<Update>| updates.iter().map(summary).collect::<Vec<_>>();
        let good = format!("{}{}", service("b", "10.96.0.22"), service("c", "10.96.0.3"));
        assert_eq!(
            summaries(source.diff(&good).unwrap()),
            ["apply service b", "apply service c", "listed services", "listed slices", "listed nodes"]
        );
        // Service d parses, then x does not: d must not stay applied.
        let broken = format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x}}\nspec: 7\n",
            service("d", "10.96.0.4")
        );
        let err = source.diff(&broken).unwrap_err().to_string();
        assert!(err.starts_with("document 2 (Service x): spec: invalid type"), "{err}");
        let next = format!("{}{}", service("b", "10.96.0.22"), service("e", "10.96.0.55"));
        assert_eq!(
            summaries(source.diff(&next).unwrap()),
            ["apply service e", "delete service c", "listed services", "listed slices", "listed nodes"]
        );
    }
}
