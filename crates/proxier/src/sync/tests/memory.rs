//! An in-memory kernel for the loop's unit tests, and the cluster fixtures they share.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs::{
    Operation, RealServer, RealServerEntry, RealServerId, Stats, Table, VirtualServer, VirtualServerEntry,
    VirtualServerId,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{Change, Config, Model, Update, operation_target};

use crate::kernel::{Kernel, KernelError};
use crate::shared::Shared;
use crate::sync::{SyncLoop, SyncObserver, SyncReport, SyncSettings};
use crate::verify::KernelReader;

/// An in-memory IPVS table with a call log; `fail` holds step texts to fail once,
/// `fail_always` step texts to fail every time.
#[derive(Default)]
pub(super) struct Memory {
    pub services: BTreeMap<VirtualServerId, (VirtualServer, BTreeMap<RealServerId, RealServer>)>,
    pub bound: BTreeSet<IpAddr>,
    pub writes: Vec<String>,
    pub fail: HashSet<String>,
    pub fail_always: HashSet<String>,
    pub batches: Vec<usize>,
    /// Whole-table dumps (`observe`).
    pub dumps: usize,
    /// Reads by the verification: lists of virtual servers, real-server reads, address lists.
    pub reads: (usize, usize, usize),
    /// Counts of the virtual servers read by the verification.
    pub counts: usize,
    /// Run at the first batch that deletes a real server (a change arriving meanwhile).
    pub on_delete: Option<Box<dyn FnOnce() + Send>>,
    /// When set, binds are done once it is true (a kernel still working through them).
    pub binds_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

#[derive(Clone, Default)]
pub(super) struct MemoryKernel(pub Arc<Mutex<Memory>>);

impl Memory {
    /// Applies `op` as the kernel does, refusing with its errno what it refuses: an add of
    /// what exists (`EEXIST`), anything on a missing virtual server (`ESRCH`), an update or
    /// delete of a missing real server (`ENOENT`).
    fn write(&mut self, op: &Operation) -> Result<(), i32> {
        const ENOENT: i32 = 2;
        const ESRCH: i32 = 3;
        const EEXIST: i32 = 17;
        let id = operation_target(op);
        if let Operation::AddVirtualServer(vs) = op {
            if self.services.contains_key(&id) {
                return Err(EEXIST);
            }
            self.services.insert(id, (vs.clone(), BTreeMap::new()));
            return Ok(());
        }
        let Some((server, rss)) = self.services.get_mut(&id) else { return Err(ESRCH) };
        match op {
            Operation::AddVirtualServer(_) => unreachable!("handled above"),
            Operation::UpdateVirtualServer(vs) => *server = vs.clone(),
            Operation::DeleteVirtualServer(_) => {
                self.services.remove(&id);
            }
            Operation::AddRealServer(_, rs) => {
                if rss.insert(rs.id, *rs).is_some() {
                    return Err(EEXIST);
                }
            }
            Operation::UpdateRealServer(_, rs) => match rss.get_mut(&rs.id) {
                Some(held) => *held = *rs,
                None => return Err(ENOENT),
            },
            Operation::DeleteRealServer(_, rs) => {
                if rss.remove(rs).is_none() {
                    return Err(ENOENT);
                }
            }
        }
        Ok(())
    }

    pub fn real_servers(&self, id: &VirtualServerId) -> Vec<RealServerEntry> {
        self.services
            .get(id)
            .map(|(_, rss)| {
                rss.values()
                    .map(|rs| RealServerEntry { server: *rs, connections: Default::default(), stats: Stats::default() })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl MemoryKernel {
    pub fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap()
    }
    fn bind_now(&self, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        let mut m = self.mem();
        addrs
            .iter()
            .map(|addr| {
                let text = format!("bind {addr}");
                if m.fail.remove(&text) {
                    return Err(KernelError::new(text, "injected failure"));
                }
                m.writes.push(text);
                m.bound.insert(*addr);
                Ok(())
            })
            .collect()
    }
    pub fn writes(&self) -> Vec<String> {
        std::mem::take(&mut self.mem().writes)
    }
}

impl Kernel for MemoryKernel {
    async fn observe(&mut self) -> Result<(Table, Vec<IpAddr>), KernelError> {
        let mut m = self.mem();
        m.dumps += 1;
        let services = m
            .services
            .values()
            .map(|(vs, rss)| {
                let entry = VirtualServerEntry { server: vs.clone(), stats: Stats::default() };
                let dests = rss
                    .values()
                    .map(|rs| RealServerEntry { server: *rs, connections: Default::default(), stats: Stats::default() })
                    .collect();
                (entry, dests)
            })
            .collect();
        Ok((Table { services }, m.bound.iter().copied().collect()))
    }

    async fn real_servers(&mut self, ids: &[VirtualServerId]) -> Result<Vec<Vec<RealServerEntry>>, KernelError> {
        let m = self.mem();
        Ok(ids.iter().map(|id| m.real_servers(id)).collect())
    }

    async fn virtual_server(&mut self, id: &VirtualServerId) -> Result<Option<VirtualServerEntry>, KernelError> {
        let m = self.mem();
        Ok(m.services.get(id).map(|(vs, _)| VirtualServerEntry { server: vs.clone(), stats: Stats::default() }))
    }

    fn bind(&self, addrs: Vec<IpAddr>) -> impl Future<Output = Vec<Result<(), KernelError>>> + Send + 'static {
        // Done at the call, as the contract says the work begins, unless held by the gate.
        let gate = self.mem().binds_gate.clone();
        let done = gate.is_none().then(|| self.bind_now(&addrs));
        let kernel = self.clone();
        async move {
            if let Some(done) = done {
                return done;
            }
            if let Some(mut gate) = gate {
                let _ = gate.wait_for(|open| *open).await;
            }
            kernel.bind_now(&addrs)
        }
    }

    async fn unbind(&self, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        let mut m = self.mem();
        addrs
            .iter()
            .map(|addr| {
                m.writes.push(format!("unbind {addr}"));
                m.bound.remove(addr);
                Ok(())
            })
            .collect()
    }

    async fn apply(&self, ops: &[Operation]) -> Result<Vec<Result<(), KernelError>>, KernelError> {
        let mut m = self.mem();
        m.batches.push(ops.len());
        if ops.iter().any(|op| matches!(op, Operation::DeleteRealServer(..)))
            && let Some(hook) = m.on_delete.take()
        {
            hook();
        }
        let mut results = Vec::new();
        for op in ops {
            let text = op.to_string();
            m.writes.push(text.clone());
            if m.fail_always.contains(&text) {
                let attempts = m.writes.iter().filter(|w| **w == text).count();
                // A loop retrying without pause would never let paused time advance: fail loudly.
                assert!(attempts < 1_000, "{text} retried {attempts} times without a pause");
            }
            if m.fail.remove(&text) || m.fail_always.contains(&text) {
                results.push(Err(KernelError::new(text, "injected failure")));
                continue;
            }
            let refused =
                m.write(op).err().map(|errno| KernelError::new(text, ipvs::Error::from_errno(errno, op, None)));
            results.push(refused.map_or(Ok(()), Err));
        }
        Ok(results)
    }

    async fn forget(&mut self, flows: &[netfilter::StaleFlows]) -> Vec<Result<usize, KernelError>> {
        let mut m = self.mem();
        flows
            .iter()
            .map(|f| {
                m.writes.push(format!("forget {f}"));
                Ok(0)
            })
            .collect()
    }
}

/// The reports, and how many had been made when the observer heard the lists were complete.
#[derive(Default)]
pub(super) struct Reports(pub Vec<SyncReport>, pub Option<usize>);

impl SyncObserver for Arc<Mutex<Reports>> {
    fn synced(&mut self, report: &SyncReport, _model: &Model) {
        self.lock().unwrap().0.push(report.clone());
    }

    fn lists_complete(&mut self) {
        let mut reports = self.lock().unwrap();
        assert_eq!(reports.1, None, "told twice");
        reports.1 = Some(reports.0.len());
    }
}

pub(super) fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": name, "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

pub(super) fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> =
        ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": format!("{service}-x"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// The TCP virtual server on port 80 of `addr` (how the fixtures' Services are programmed).
pub(super) fn tcp(addr: &str) -> VirtualServerId {
    VirtualServerId::Tuple { protocol: ipvs::Protocol::Tcp, addr: addr.parse().unwrap(), port: 80 }
}

pub(super) fn listed(shared: &Shared) {
    shared.feed(Update::Service(Change::Listed));
    shared.feed(Update::EndpointSlice(Change::Listed));
    shared.feed(Update::Node(Change::<Node>::Listed));
    shared.feed(Update::NodeAddresses(vec!["192.0.2.10".parse().unwrap()]));
}

pub(super) fn settings() -> SyncSettings {
    SyncSettings { sync_period: Duration::from_secs(30), min_sync_period: Duration::ZERO }
}

/// A loop over `kernel` and `shared` whose reports nobody reads.
pub(super) fn sync_loop(kernel: &MemoryKernel, shared: Arc<Shared>) -> SyncLoop<MemoryKernel, Arc<Mutex<Reports>>> {
    SyncLoop::new(kernel.clone(), shared, Arc::new(Mutex::new(Reports::default())), settings())
}

pub(super) fn cluster(services: usize) -> Arc<Shared> {
    let shared = Arc::new(Shared::new(Model::new(Config::new("node-a")), "node-a"));
    for i in 0..services {
        let name = format!("svc{i}");
        shared.feed(Update::Service(Change::Apply(service(&name, &format!("10.96.0.{}", i + 1)))));
        shared.feed(Update::EndpointSlice(Change::Apply(slice(&name, &["10.244.1.1", "10.244.1.2"]))));
    }
    shared
}

/// The verification's reads of a [`MemoryKernel`]. With a gate, a list of virtual servers is
/// taken at once but handed over only when the test adds a permit: a read in flight while
/// the loop writes.
pub(super) struct MemoryReader {
    pub kernel: MemoryKernel,
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Whether it counts the virtual servers (as the daemon's reader does), or cannot (the
    /// verification then lists them every period).
    pub counting: bool,
    /// Whether each count fails (as without `CAP_NET_ADMIN`).
    pub count_fails: bool,
    /// The nftables side, whose set `SET` it reads (its digest held until `set_gate` allows).
    pub sets: Option<(MemorySets, Option<Arc<tokio::sync::Semaphore>>)>,
    /// Virtual servers its lists leave out, as a dump that raced writes skips entries.
    pub skip: Vec<VirtualServerId>,
}

impl MemoryReader {
    /// A reader of `kernel` that counts, with no gate, no sets, and lists that skip nothing.
    pub fn of(kernel: &MemoryKernel) -> MemoryReader {
        MemoryReader {
            kernel: kernel.clone(),
            gate: None,
            counting: true,
            count_fails: false,
            sets: None,
            skip: Vec::new(),
        }
    }
}

/// The one nftables set of [`MemorySets`].
pub(super) const SET: &str = "service_ports_v4";

/// An nftables side with one set, as a digest each: what the loop applied and what the kernel
/// holds. Every write with work adds one element to both; a repair makes the kernel's the
/// applied.
#[derive(Clone, Default)]
pub(super) struct MemorySets(pub Arc<Mutex<SetsMem>>);

#[derive(Default)]
pub(super) struct SetsMem {
    pub applied: u64,
    pub kernel: u64,
    pub repairs: usize,
}

impl crate::filter::Filter for MemorySets {
    fn apply(&mut self, work: crate::filter::FilterWork) -> Result<usize, netfilter::NftError> {
        if matches!(&work, crate::filter::FilterWork::Only(updates) if updates.is_empty()) {
            return Ok(0);
        }
        let mut m = self.0.lock().unwrap();
        m.applied += 1;
        m.kernel += 1;
        Ok(1)
    }

    fn set_digest(&self, set: &str) -> Option<u64> {
        (set == SET).then(|| self.0.lock().unwrap().applied)
    }

    fn repair_set(&mut self, _set: &str) -> Result<usize, netfilter::NftError> {
        let mut m = self.0.lock().unwrap();
        m.kernel = m.applied;
        m.repairs += 1;
        Ok(1)
    }
}

impl KernelReader for MemoryReader {
    async fn virtual_servers(&mut self, _expected: usize) -> Result<Vec<VirtualServer>, KernelError> {
        let list: Vec<VirtualServer> = {
            let mut m = self.kernel.mem();
            m.reads.0 += 1;
            m.services.values().filter(|(vs, _)| !self.skip.contains(&vs.id)).map(|(vs, _)| vs.clone()).collect()
        };
        if let Some(gate) = &self.gate {
            gate.acquire().await.map_err(|e| KernelError::new("gate", e))?.forget();
        }
        Ok(list)
    }

    async fn virtual_server_count(&mut self) -> Result<Option<usize>, KernelError> {
        if !self.counting {
            return Ok(None);
        }
        let mut m = self.kernel.mem();
        m.counts += 1;
        if self.count_fails {
            return Err(KernelError::new("count", std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        }
        // As the kernel: IPv4 ones only.
        Ok(Some(m.services.keys().filter(|id| id.family() == ipvs::Family::V4).count()))
    }

    async fn real_servers(&mut self, vs: &VirtualServerId) -> Result<Option<Vec<RealServerEntry>>, KernelError> {
        let mut m = self.kernel.mem();
        m.reads.1 += 1;
        Ok(m.services.contains_key(vs).then(|| m.real_servers(vs)))
    }

    async fn addresses(&mut self) -> Result<Vec<IpAddr>, KernelError> {
        let mut m = self.kernel.mem();
        m.reads.2 += 1;
        Ok(m.bound.iter().copied().collect())
    }

    async fn filter_set(&mut self, _n: usize) -> Result<Option<(String, u64)>, KernelError> {
        let Some((sets, gate)) = &self.sets else { return Ok(None) };
        let digest = sets.0.lock().unwrap().kernel;
        if let Some(gate) = gate {
            gate.acquire().await.map_err(|e| KernelError::new("gate", e))?.forget();
        }
        Ok(Some((SET.to_string(), digest)))
    }
}
