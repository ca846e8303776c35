//! The loop's side of the verification (see [`crate::verify`]): what it wrote and when, and the
//! reads it takes in between syncs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use ipvs::{Operation, VirtualServer, VirtualServerId};
use model::{Changes, Observed, Step, operation_target};
use tokio::sync::mpsc;

use crate::verify::{KernelReader, Read, Reading, TaskShared, VerifySettings, WriteClock, verify};

/// Starts the verification task from the virtual servers the adopting sync found.
type Start = Box<
    dyn FnOnce(Vec<VirtualServerId>, Arc<WriteClock>, Arc<TaskShared>, mpsc::Sender<Reading>) -> BoxFuture<'static, ()>
        + Send,
>;

/// Reads waiting for the loop; a few, so that a slow loop slows the reads instead of queueing them.
const READINGS_QUEUED: usize = 4;

#[derive(Default)]
pub(super) struct Verification {
    start: Option<Start>,
    pub clock: Arc<WriteClock>,
    /// When each virtual server and address was last written (by the clock), for as long as a
    /// read that began before may still arrive.
    written: HashMap<VirtualServerId, u64>,
    written_addrs: HashMap<IpAddr, u64>,
    /// When a virtual server was last added or deleted (by the clock): a count that began
    /// before cannot vouch for the record.
    count_written: u64,
    /// What the reads found to differ: planned by the next sync.
    pub found: Changes,
    /// Virtual servers a list did not show: the next sync reads each back before it believes
    /// one gone (a list can skip entries; see `model::VerifiedVirtualServers::missing`).
    pub missing: BTreeSet<VirtualServerId>,
    /// Virtual servers someone else made, whose real servers the next sync reads.
    pub unknown: Vec<VirtualServer>,
    /// A period passed or a list was taken in: the next sync is a verification (it reads the
    /// real servers being removed gracefully, for fresh counts, and reports as a full one).
    pub due: bool,
    /// A round began: the next sync also compares the whole nftables state.
    pub sweep: bool,
    /// When the nftables sets were last written (by the clock): a set read that began before
    /// cannot vouch for them.
    filter_written: u64,
    /// nftables sets whose digest differed from what was applied: the next sync compares them
    /// element by element and repairs them.
    pub filter_repairs: Vec<String>,
    /// Reads that failed since the last sync.
    pub read_failures: usize,
    /// Virtual servers whose connections were just counted: their removals are decided on
    /// fresh counts by the next verification sync and those after it (a slice each), then the
    /// counts are stale.
    pub counted: Vec<VirtualServerId>,
    /// Virtual servers whose graceful removals the last verification has yet to plan, a slice
    /// per sync (their counts still fresh).
    pub graceful_due: BTreeSet<VirtualServerId>,
    /// Shared with the task: the virtual servers with graceful removals pending, which it
    /// counts, and whether it is to list the virtual servers.
    task: Arc<TaskShared>,
}

impl Verification {
    pub fn new<R: KernelReader>(reader: R, settings: VerifySettings) -> Verification {
        let start: Start =
            Box::new(move |ids, clock, task, to_loop| Box::pin(verify(reader, settings, clock, ids, task, to_loop)));
        Verification { start: Some(start), ..Verification::default() }
    }

    /// Spawns the verification task, once; the receiver of its reads.
    pub fn spawn(&mut self, observed: &Observed) -> Option<mpsc::Receiver<Reading>> {
        let start = self.start.take()?;
        let (to_loop, readings) = mpsc::channel(READINGS_QUEUED);
        let ids = observed.virtual_servers().map(|(id, _)| *id).collect();
        tokio::spawn(start(ids, self.clock.clone(), self.task.clone(), to_loop));
        Some(readings)
    }

    /// Tells the task which virtual servers have graceful removals pending.
    pub fn set_pending(&self, ids: impl Iterator<Item = VirtualServerId>) {
        let mut ids: Vec<VirtualServerId> = ids.collect();
        ids.dedup();
        if let Ok(mut pending) = self.task.pending.lock() {
            *pending = ids;
        }
    }

    /// Runs `write` of the nftables sets (it returns how many elements it wrote) with the
    /// clock odd meanwhile, as for IPVS (inside the sync's writing, or a writing of its own):
    /// a set read that began before cannot vouch for what it wrote, if anything (most syncs
    /// write no element).
    pub fn write_filter<E>(&mut self, write: impl FnOnce() -> Result<usize, E>) -> Result<usize, E> {
        let within = self.clock.now() % 2 == 1;
        let writing = if within { self.clock.now() } else { self.clock.tick() };
        let written = write();
        if !matches!(written, Ok(0)) {
            self.filter_written = writing;
        }
        if !within {
            self.clock.tick();
        }
        written
    }

    /// Notes that `step` is being written now.
    pub fn wrote(&mut self, step: &Step) {
        let now = self.clock.now();
        match step {
            Step::Kernel(op) => {
                if matches!(op, Operation::AddVirtualServer(_) | Operation::DeleteVirtualServer(_)) {
                    self.count_written = now;
                }
                self.written.insert(operation_target(op), now);
            }
            Step::Bind(a) | Step::Unbind(a) => {
                self.written_addrs.insert(*a, now);
            }
        }
    }

    /// Takes `reading` into `observed` (and compares a set's digest with `applied_digest`'s);
    /// returns whether a sync is due for it.
    pub fn take_in(
        &mut self,
        observed: &mut Observed,
        reading: Reading,
        applied_digest: impl Fn(&str) -> Option<u64>,
    ) -> bool {
        let started = reading.started;
        let written = |id: &VirtualServerId| self.written.get(id).is_some_and(|w| *w >= started);
        let due = match reading.read {
            Read::VirtualServers(listed) => {
                tracing::debug!(listed = listed.len(), "verification: the virtual servers listed");
                let verified = observed.verify_virtual_servers(&listed, written);
                for id in &verified.altered {
                    tracing::warn!(virtual_server = %id, "altered by someone else; repairing");
                }
                for id in &verified.missing {
                    tracing::debug!(virtual_server = %id, "not listed; reading it back");
                }
                self.found.virtual_servers.extend(verified.altered);
                self.missing.extend(verified.missing);
                let unknown = verified.unknown;
                self.unknown.extend(listed.into_iter().filter(|s| unknown.contains(&s.id)));
                self.due = true;
                true
            }
            Read::RealServers(reads) => {
                let mut differ = false;
                for (id, dests) in reads {
                    let Some(server) = observed.virtual_server(&id).map(|v| v.server.clone()) else { continue };
                    if written(&id) {
                        continue;
                    }
                    let Some(dests) = dests else {
                        tracing::warn!(virtual_server = %id, "gone from the kernel; repairing");
                        observed.remove_virtual_server(&id);
                        self.found.virtual_servers.insert(id);
                        differ = true;
                        continue;
                    };
                    if observed.verify_real_servers(&server, &dests, false) {
                        tracing::warn!(virtual_server = %id, "real servers altered by someone else; repairing");
                        self.found.virtual_servers.insert(id);
                        differ = true;
                    }
                }
                differ
            }
            Read::Counted(reads) => {
                for (id, dests) in reads {
                    let Some(server) = observed.virtual_server(&id).map(|v| v.server.clone()) else { continue };
                    if written(&id) {
                        continue;
                    }
                    match dests {
                        // Planned by the verification sync and those after it, a slice each.
                        Some(dests) => {
                            observed.verify_real_servers(&server, &dests, true);
                            self.counted.push(id);
                        }
                        None => {
                            observed.remove_virtual_server(&id);
                            self.found.virtual_servers.insert(id);
                        }
                    }
                }
                true
            }
            Read::Addresses(listed) => {
                tracing::debug!(listed = listed.len(), "verification: the dummy link's addresses listed");
                let differ =
                    observed.verify_bound(&listed, |a| self.written_addrs.get(a).is_some_and(|w| *w >= started));
                for addr in &differ {
                    tracing::warn!(%addr, "bound or unbound on the dummy link by someone else; repairing");
                }
                self.found.addresses.extend(differ);
                self.sweep = true;
                true
            }
            Read::FilterSet(set, digest) => {
                let differs = self.filter_written < started
                    && applied_digest(&set).is_some_and(|applied| applied != digest)
                    && !self.filter_repairs.contains(&set);
                if differs {
                    self.filter_repairs.push(set);
                }
                differs
            }
            Read::Count(n) => {
                // The kernel counts IPv4 virtual servers only (for its old socket-option interface).
                let (recorded, _) = observed.count_by_family();
                let differs = self.count_written < started && n != recorded;
                if differs {
                    tracing::warn!(
                        kernel = n,
                        recorded,
                        "the kernel holds another number of IPv4 virtual servers than written; listing them"
                    );
                    self.task.list_wanted.store(true, Ordering::Release);
                }
                false
            }
            Read::Period => {
                // IPv6 virtual servers are in no count: while there are any, the list is read
                // every period, as the one way to see one deleted within it.
                if observed.count_by_family().1 > 0 {
                    self.task.list_wanted.store(true, Ordering::Release);
                }
                self.due = true;
                true
            }
            Read::Failed(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "verification read failed (retried)");
                self.read_failures += 1;
                true
            }
        };
        // Reads arrive in the order they began: none still to come began before this one.
        self.written.retain(|_, w| *w >= started);
        self.written_addrs.retain(|_, w| *w >= started);
        due
    }
}
