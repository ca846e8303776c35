//! Running a plan's steps against the kernel and recording what they did.

use std::net::IpAddr;
use std::time::Duration;

use ipvs::Operation;
use model::{Step, operation_target};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::refusals::{Refusal, refusal};
use super::{MAX_BATCH, SyncLoop, SyncObserver, SyncReport};
use crate::kernel::{Kernel, KernelError};
use crate::stale::stale_flows;

/// The binds' results, in order, and how long they took.
type Bound = (Vec<Result<(), KernelError>>, Duration);

/// A plan's address steps, taken out of it: the binds, already under way in the kernel while
/// the sync writes the rest, and the unbinds, which wait for them.
pub(super) struct Addresses {
    binds: Vec<IpAddr>,
    unbinds: Vec<IpAddr>,
    /// The binds' results, once done.
    bound: Option<JoinHandle<Bound>>,
}

impl Addresses {
    /// The addresses being bound, sorted.
    pub(super) fn binding(&self) -> &[IpAddr] {
        &self.binds
    }
}

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Takes the address steps out of `steps` (in place: a cold start's plan is 120,000 steps;
    /// only the addresses are copied out) and starts the binds, which the kernel works
    /// through on another CPU while the loop writes the IPVS batches and the nftables side: a
    /// virtual server whose address is not bound yet is merely unreachable for that moment.
    pub(super) fn start_binds(&self, steps: &mut Vec<Step>) -> Addresses {
        let mut binds = Vec::new();
        let mut unbinds = Vec::new();
        steps.retain(|step| match step {
            Step::Bind(addr) => {
                binds.push(*addr);
                false
            }
            Step::Unbind(addr) => {
                unbinds.push(*addr);
                false
            }
            Step::Kernel(_) => true,
        });
        binds.sort_unstable();
        let bound = (!binds.is_empty()).then(|| {
            let began = Instant::now();
            let binding = self.kernel.bind(binds.clone());
            // Awaited on a task of its own, so that the time the binds took is known even when
            // the loop comes for their results later.
            tokio::spawn(async move { (binding.await, began.elapsed()) })
        });
        Addresses { binds, unbinds, bound }
    }

    /// Runs the IPVS operations of `steps` (no address steps left in them) in batches of at
    /// most [`MAX_BATCH`], in order; records the successful ones in `observed` and the failed
    /// ones for a retry; returns the failures.
    pub(super) async fn execute(&mut self, mut steps: Vec<Step>, report: &mut SyncReport) -> Vec<(Step, KernelError)> {
        let op_failures = apply_batches(&self.kernel, &steps).await;
        let mut failures = Vec::new();
        // Recorded in order (a virtual server before its real servers), from the back of the
        // reversed plan, the buffer shrunk as it empties: the plan is released while the record
        // of what was applied grows, instead of both peaking together at the end.
        steps.reverse();
        let mut op_failures = op_failures.into_iter().peekable();
        let mut index = 0;
        while let Some(step) = steps.pop() {
            let result = match op_failures.next_if(|(i, _)| *i == index) {
                Some((_, e)) => Err(e),
                None => Ok(()),
            };
            self.record(step, result, report, &mut failures);
            index += 1;
            if steps.capacity() - steps.len() >= MAX_BATCH {
                steps.shrink_to_fit();
            }
        }
        failures
    }

    /// Waits for the binds [`SyncLoop::start_binds`] started and records them, then runs the
    /// unbinds (an address is unbound only once every bind is done); adds the failures to
    /// `failures`. Returns how long the binds and the unbinds took.
    pub(super) async fn finish_addresses(
        &mut self,
        addresses: Addresses,
        report: &mut SyncReport,
        failures: &mut Vec<(Step, KernelError)>,
    ) -> Duration {
        let Addresses { binds, unbinds, bound } = addresses;
        let mut took = Duration::ZERO;
        if let Some(bound) = bound {
            let results = match bound.await {
                Ok((results, bind_time)) => {
                    took += bind_time;
                    results
                }
                Err(e) => {
                    let why = e.to_string();
                    binds.iter().map(|_| Err(KernelError::new("bind addresses", why.clone()))).collect()
                }
            };
            self.record_addresses(&binds, results, Step::Bind, report, failures);
        }
        if !unbinds.is_empty() {
            let began = Instant::now();
            let unbound = self.kernel.unbind(&unbinds).await;
            took += began.elapsed();
            self.record_addresses(&unbinds, unbound, Step::Unbind, report, failures);
        }
        took
    }

    /// Records one result per address (a missing one is a failure).
    fn record_addresses(
        &mut self,
        addrs: &[IpAddr],
        results: Vec<Result<(), KernelError>>,
        step: fn(IpAddr) -> Step,
        report: &mut SyncReport,
        failures: &mut Vec<(Step, KernelError)>,
    ) {
        let mut results = results.into_iter();
        for addr in addrs {
            let step = step(*addr);
            let result = results.next().unwrap_or_else(|| Err(KernelError::new(step.to_string(), "no result for it")));
            self.record(step, result, report, failures);
        }
    }

    pub(super) fn record(
        &mut self,
        step: Step,
        result: Result<(), KernelError>,
        report: &mut SyncReport,
        failures: &mut Vec<(Step, KernelError)>,
    ) {
        // A refusal that shows the record wrong is no failure (see `refusals`).
        let result = match result.map_err(|e| (refusal(&step, &e), e)) {
            Ok(()) => Ok(()),
            Err((Refusal::Reached, e)) => {
                tracing::debug!("{e}: already so");
                Ok(())
            }
            Err((Refusal::Drift, e)) => {
                if let Step::Kernel(op) = &step {
                    let id = operation_target(op);
                    tracing::warn!("{e}: not as recorded (changed by someone else?); reading {id} back");
                    self.read_back.insert(id);
                    self.retry.virtual_servers.insert(id);
                }
                // Not counted: the sync that plans it again counts what it writes.
                self.verification.wrote(&step);
                return;
            }
            Err((Refusal::Failed, e)) => Err(e),
        };
        report.count(&step, result.is_ok());
        self.verification.wrote(&step);
        match result {
            Ok(()) => {
                tracing::debug!("{step}");
                if let Step::Kernel(op) = &step
                    && let Some(flows) = stale_flows(&self.observed, op)
                {
                    self.stale.insert(flows);
                }
                if let Step::Kernel(Operation::AddVirtualServer(_) | Operation::DeleteVirtualServer(_)) = step {
                    self.ownership_changed = true;
                }
                self.observed.apply(&step);
            }
            Err(e) => {
                match &step {
                    Step::Kernel(op) => {
                        self.retry.virtual_servers.insert(operation_target(op));
                    }
                    Step::Bind(a) => {
                        // The record counted it bound (see `write_ownership`).
                        self.ownership_changed = true;
                        self.retry.addresses.insert(*a);
                    }
                    Step::Unbind(a) => {
                        self.retry.addresses.insert(*a);
                    }
                }
                failures.push((step, e));
            }
        }
    }
}

/// Runs the kernel operations among `steps` in batches of at most [`MAX_BATCH`]; returns the
/// failures by index in `steps`, in order.
async fn apply_batches<K: Kernel>(kernel: &K, steps: &[Step]) -> Vec<(usize, KernelError)> {
    let mut failures = Vec::new();
    for (n, chunk) in steps.chunks(MAX_BATCH).enumerate() {
        let offset = n * MAX_BATCH;
        let ops: Vec<Operation> = chunk
            .iter()
            .filter_map(|s| match s {
                Step::Kernel(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        match kernel.apply(&ops).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for (i, op) in ops.iter().enumerate() {
                    match results.next() {
                        Some(Ok(())) => {}
                        Some(Err(e)) => failures.push((offset + i, e)),
                        None => failures.push((
                            offset + i,
                            KernelError::new(op.to_string(), "the batch returned no result for it"),
                        )),
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                failures.extend(
                    ops.iter().enumerate().map(|(i, op)| (offset + i, KernelError::new(op.to_string(), why.clone()))),
                );
            }
        }
    }
    failures
}
