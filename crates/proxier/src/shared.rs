//! The state the watch sources and the sync loop share: the model, which lists are complete,
//! and what changed since the last sync.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use model::{Change, Model, SERVICE_NAME_LABEL, ServiceKey, Update};
use tokio::sync::{Notify, watch};
/// The annotation the endpoint-slice controller sets to when the change it mirrors happened.
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The taint the cluster autoscaler puts on a node it is about to delete.
const AUTOSCALER_DELETE_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Facts the health endpoints report, as upstream's `/healthz` and `/livez` use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthFacts {
    /// The oldest change not yet applied, if any.
    pub pending_since: Option<Instant>,
    /// When a sync last left nothing pending.
    pub last_synced: Option<Timestamp>,
    /// When a change was last fed.
    pub last_queued: Option<Timestamp>,
    /// False while the Node is being deleted (or is gone).
    pub node_eligible: bool,
    /// Whether the last sync failed (a kernel step, a dump, or the nftables side).
    pub sync_failing: bool,
}

/// What the sources accumulated for the next sync.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Services touched by some change (for health-check node ports and logs).
    pub touched: BTreeSet<ServiceKey>,
    /// `last-change-trigger-time`s of the EndpointSlice changes, for network programming latency.
    pub trigger_times: Vec<Timestamp>,
    /// Service changes seen.
    pub service_changes: u64,
    /// EndpointSlice changes seen.
    pub endpoint_changes: u64,
}

pub(crate) struct State {
    pub model: Model,
    /// Addresses removed from the dummy link since the last sync (see [`Update::Unbound`]).
    pub unbound: BTreeSet<IpAddr>,
    /// Whether someone else edited the nftables table since the last sync.
    pub filter_edited: bool,
    /// Services, EndpointSlices, the Node, the node's addresses.
    pub lists: [bool; 4],
    pub pending: Pending,
    pub health: HealthFacts,
}

/// The model with the bookkeeping around it, shared by the sources (which [`Shared::feed`] it)
/// and the sync loop (which it wakes). Clone the `Arc` to share it.
pub struct Shared {
    state: Mutex<State>,
    wake: Notify,
    node_name: String,
    started: Timestamp,
    /// Set once the nftables keeper's first whole write is done: the generation then, if known.
    filter_settled: watch::Sender<Option<Option<u32>>>,
}

impl Shared {
    /// Shares `model`, for node `node_name` (other Nodes fed in are ignored).
    pub fn new(model: Model, node_name: impl Into<String>) -> Shared {
        Shared {
            state: Mutex::new(State {
                model,
                unbound: BTreeSet::new(),
                filter_edited: false,
                lists: [false; 4],
                pending: Pending::default(),
                health: HealthFacts {
                    pending_since: None,
                    last_synced: None,
                    last_queued: None,
                    node_eligible: true,
                    sync_failing: false,
                },
            }),
            wake: Notify::new(),
            node_name: node_name.into(),
            started: Timestamp::now(),
            filter_settled: watch::Sender::new(None),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent model (updates are whole calls
        // into it); keep going rather than take the proxy down.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until some change was fed since the last wait (a change fed before the wait counts).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }

    /// Runs `f` on the model (read only), e.g. to answer the debug endpoint. Keep it short: the
    /// sources and the sync loop wait meanwhile.
    pub fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.lock().model)
    }

    /// The facts `/healthz` and `/livez` report.
    pub fn health(&self) -> HealthFacts {
        self.lock().health
    }

    /// Changes fed since the last sync took them: (Service changes, EndpointSlice changes).
    pub fn pending_changes(&self) -> (u64, u64) {
        let state = self.lock();
        (state.pending.service_changes, state.pending.endpoint_changes)
    }

    /// Whether this node's Node object has been listed (what the nftables keeper may need).
    pub(crate) fn node_listed(&self) -> bool {
        self.lock().lists[2]
    }

    /// Whether the first complete lists of Services, EndpointSlices, the Node and the node's
    /// addresses are in.
    pub fn lists_complete(&self) -> bool {
        self.lock().lists.iter().all(|l| *l)
    }

    /// Applies one change to the model and wakes the sync loop.
    pub fn feed(&self, update: Update) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut warnings = Vec::new();
        let mut queued = true;
        let mut wake = false;
        match update {
            Update::Service(Change::Apply(svc)) => {
                warnings = state.model.upsert_service(&svc);
                state.pending.service_changes += 1;
                state.pending.touched.insert(service_key(&svc));
            }
            Update::Service(Change::Delete(svc)) => {
                let key = service_key(&svc);
                state.model.delete_service(key.namespace(), key.name());
                state.pending.service_changes += 1;
                state.pending.touched.insert(key);
            }
            Update::EndpointSlice(Change::Apply(slice)) => {
                warnings = state.model.upsert_endpoint_slice(&slice);
                state.pending.endpoint_changes += 1;
                if let Some(key) = slice_service(&slice) {
                    state.pending.touched.insert(key);
                }
                if let Some(t) = trigger_time(&slice).filter(|t| *t > self.started) {
                    state.pending.trigger_times.push(t);
                }
            }
            Update::EndpointSlice(Change::Delete(slice)) => {
                state.model.delete_endpoint_slice(slice.namespace().as_deref().unwrap_or_default(), &slice.name_any());
                state.pending.endpoint_changes += 1;
                if let Some(key) = slice_service(&slice) {
                    state.pending.touched.insert(key);
                }
            }
            Update::Node(Change::Apply(node)) => {
                if node.name_any() == self.node_name {
                    state.model.set_node(&node);
                    state.health.node_eligible = node_eligible(&node);
                } else {
                    queued = false;
                }
            }
            Update::Node(Change::Delete(node)) => {
                if node.name_any() == self.node_name {
                    state.health.node_eligible = false;
                }
                queued = false;
            }
            Update::NodeAddresses(addrs) => {
                // Queued only when the model changed: the first list opens the gate below.
                let before = state.model.node_addresses().to_vec();
                state.model.set_node_addresses(addrs);
                queued = state.model.node_addresses() != before;
                wake = open_gate(&mut state.lists, 3);
            }
            Update::Unbound(addrs) => {
                // Only an address still wanted is work: the proxy's own unbinds, and a foreign
                // removal of an address no longer wanted, wake nothing.
                let wanted: Vec<IpAddr> =
                    addrs.into_iter().filter(|a| state.model.desired().wants_address(a)).collect();
                queued = !wanted.is_empty();
                state.unbound.extend(wanted);
            }
            Update::Service(Change::Listed) | Update::EndpointSlice(Change::Listed) | Update::Node(Change::Listed) => {
                let index = match update {
                    Update::Service(_) => 0,
                    Update::EndpointSlice(_) => 1,
                    _ => 2,
                };
                // A list completing changes nothing to sync, except that the first complete
                // set opens the gate.
                queued = false;
                wake = open_gate(&mut state.lists, index);
            }
        }
        if queued {
            // Liveness times how long an applicable change waits. Until the first complete
            // lists nothing is synced in full (readiness says so), and the node's addresses
            // arrive first: timed from then, the proxy turned "not alive" when the API server
            // was unreachable at start, and a liveness probe would restart it for no fault of
            // its own. The first full sync is due once the lists are complete.
            if state.lists.iter().all(|l| *l) {
                state.health.pending_since.get_or_insert_with(Instant::now);
            }
            state.health.last_queued = Some(Timestamp::now());
        }
        if wake {
            state.health.pending_since.get_or_insert_with(Instant::now);
        }
        drop(guard);
        for w in warnings {
            tracing::warn!(object = %w.object, "{}", w.reason);
        }
        if queued || wake {
            self.wake.notify_one();
        }
    }
}

impl Shared {
    /// Waits until the nftables keeper's first whole write is done; the nftables generation
    /// read right after it, if known. A table monitor subscribes then (not before: the kernel
    /// builds a notification per element of that write for every listener) and compares the
    /// generation it reads with this one: equal, no transaction came in between; else (or
    /// unknown) the table is repaired once ([`Shared::filter_edited`]). Pending forever while
    /// the proxy keeps no table.
    pub async fn filter_settled(&self) -> Option<u32> {
        let mut settled = self.filter_settled.subscribe();
        // The sender lives as long as `self`: the wait ends only when it is set.
        let generation = settled.wait_for(Option::is_some).await.map(|g| g.flatten());
        match generation {
            Ok(generation) => generation,
            Err(_) => std::future::pending().await,
        }
    }

    /// The keeper's first whole write is done, with the generation right after it; later
    /// calls change nothing.
    pub(crate) fn settle_filter(&self, generation: Option<u32>) {
        self.filter_settled.send_if_modified(|settled| {
            let first = settled.is_none();
            if first {
                *settled = Some(generation);
            }
            first
        });
    }

    /// Someone else edited the nftables table (the table monitor says so): the next sync,
    /// due at once, replaces it whole.
    pub fn filter_edited(&self) {
        self.lock().filter_edited = true;
        self.wake.notify_one();
    }
}

/// Marks list `index` complete; true when that completes the first full set.
fn open_gate(lists: &mut [bool; 4], index: usize) -> bool {
    let was_complete = lists.iter().all(|l| *l);
    lists[index] = true;
    !was_complete && lists.iter().all(|l| *l)
}

fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ServiceKey::new(slice.namespace().unwrap_or_default(), name.clone()))
}

fn trigger_time(slice: &EndpointSlice) -> Option<Timestamp> {
    slice.annotations().get(TRIGGER_TIME_ANNOTATION)?.parse().ok()
}

/// Upstream's node eligibility: not being deleted, not marked for deletion by the autoscaler.
fn node_eligible(node: &Node) -> bool {
    let deleting = node.metadata.deletion_timestamp.is_some();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == AUTOSCALER_DELETE_TAINT));
    !deleting && !tainted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::SignedDuration;
    use model::Config;

    fn slice(annotation: Option<String>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("ns".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                annotations: annotation.map(|a| [(TRIGGER_TIME_ANNOTATION.to_string(), a)].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        }
    }

    /// Issue 8, item 4 (found failing in the VM test `readiness_waits_for_the_api_server_and_for_nftables`):
    /// with the API server unreachable at start the proxy is not ready but alive; the node's
    /// addresses, which arrive first, start no liveness clock until the lists are complete.
    #[test]
    fn changes_before_the_first_complete_lists_leave_the_proxy_alive() {
        let shared = Shared::new(Model::new(Config::new("node-a")), "node-a");
        shared.feed(Update::NodeAddresses(vec!["192.0.2.10".parse().unwrap()]));
        assert!(shared.health().pending_since.is_none(), "nothing can be applied yet");
        assert!(shared.health().last_queued.is_some(), "but the change is known");
        shared.feed(Update::Service(Change::Listed));
        shared.feed(Update::EndpointSlice(Change::Listed));
        assert!(shared.health().pending_since.is_none(), "lists still incomplete");
        shared.feed(Update::Node(Change::Listed));
        assert!(shared.health().pending_since.is_some(), "the first full sync is due from now");
    }

    /// Upstream's network programming latency: from each EndpointSlice change's trigger time,
    /// only for changes after the proxy started (older ones measure its start, not the network).
    #[test]
    fn trigger_times_are_collected_from_endpoint_slice_changes_after_start() {
        let later = (Timestamp::now() + SignedDuration::from_secs(5)).to_string();
        let earlier = (Timestamp::now() - SignedDuration::from_secs(3600)).to_string();
        // (annotation, deleted, collected)
        let cases: [(Option<&str>, bool, bool); 5] = [
            (Some(&later), false, true),
            (Some(&earlier), false, false),
            (Some("yesterday"), false, false),
            (None, false, false),
            (Some(&later), true, false),
        ];
        for (i, (annotation, deleted, collected)) in cases.into_iter().enumerate() {
            let shared = Shared::new(Model::new(Config::new("node-a")), "node-a");
            let slice = slice(annotation.map(str::to_string));
            let change = if deleted { Change::Delete(slice) } else { Change::Apply(slice) };
            shared.feed(Update::EndpointSlice(change));
            let state = shared.lock();
            let want: Vec<Timestamp> =
                annotation.filter(|_| collected).map(|a| a.parse().unwrap()).into_iter().collect();
            assert_eq!(state.pending.trigger_times, want, "case {i}");
            assert_eq!(state.pending.touched, [ServiceKey::new("ns", "web")].into(), "case {i}");
        }
    }

    /// The table monitor waits for the keeper's first whole write; the generation it then
    /// compares with is that of the first write, not of a later one.
    #[tokio::test]
    async fn the_first_settled_generation_counts_and_wakes_the_waiter() {
        let shared = std::sync::Arc::new(Shared::new(Model::new(Config::new("node-a")), "node-a"));
        let waiter = tokio::spawn({
            let shared = shared.clone();
            async move { shared.filter_settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no whole write yet");
        shared.settle_filter(Some(7));
        shared.settle_filter(Some(9));
        assert_eq!(waiter.await.unwrap(), Some(7));
        assert_eq!(shared.filter_settled().await, Some(7));

        let unknown = Shared::new(Model::new(Config::new("node-a")), "node-a");
        unknown.settle_filter(None);
        unknown.settle_filter(Some(3));
        assert_eq!(unknown.filter_settled().await, None, "unknown stays unknown: the monitor repairs once");
    }
}
