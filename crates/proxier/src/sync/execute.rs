//! Running a plan's steps against the kernel and recording what they did.

use std::net::IpAddr;
use std::time::Duration;

use ipvs::Operation;
use model::{Step, operation_target};
use tokio::time::Instant;

use super::{MAX_BATCH, SyncLoop, SyncObserver, SyncReport};
use crate::kernel::{Kernel, KernelError};
use crate::stale::stale_flows;

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Runs `steps`: the binds at the same time as the IPVS operations (batches of at most
    /// [`MAX_BATCH`], in order), since the kernel does both on different CPUs and a virtual
    /// server whose address is not bound yet is merely unreachable for that moment; then the
    /// unbinds. Records the successful steps in `observed` and the failed ones for a retry;
    /// returns the failures. `address_time` accumulates the time spent binding and unbinding.
    pub(super) async fn execute(
        &mut self,
        mut steps: Vec<Step>,
        report: &mut SyncReport,
        address_time: &mut Duration,
    ) -> Vec<(Step, KernelError)> {
        let mut binds = Vec::new();
        let mut unbinds = Vec::new();
        // In place: a cold start's plan is 120,000 steps; only the addresses are copied out.
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
        let kernel = &self.kernel;
        let binding = async {
            let began = Instant::now();
            let results = if binds.is_empty() { Vec::new() } else { kernel.bind(&binds).await };
            (results, began.elapsed())
        };
        let ((bound, bind_time), op_failures) = tokio::join!(binding, apply_batches(kernel, &steps));
        *address_time += bind_time;

        let mut failures = Vec::new();
        self.record_addresses(&binds, bound, Step::Bind, report, &mut failures);
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

        if !unbinds.is_empty() {
            let began = Instant::now();
            let unbound = self.kernel.unbind(&unbinds).await;
            *address_time += began.elapsed();
            self.record_addresses(&unbinds, unbound, Step::Unbind, report, &mut failures);
        }
        failures
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
                    Step::Bind(a) | Step::Unbind(a) => {
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
