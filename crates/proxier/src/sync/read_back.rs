//! Virtual servers the record may be wrong about, read back one by one before the sync plans
//! them: those whose steps the kernel refused as not matching the record (`refusals`), and
//! those a verification's list did not show (a list can skip entries, so it proves no absence).

use ipvs::{RealServerEntry, VirtualServerEntry, VirtualServerId};
use model::{DesiredState, Observed};

use super::{SyncLoop, SyncObserver, SyncReport};
use crate::kernel::{Kernel, KernelError};

impl<K: Kernel, O: SyncObserver> SyncLoop<K, O> {
    /// Reads back the virtual servers a refusal showed to differ from the record and those a
    /// list did not show: the record takes configuration and real servers as the kernel holds
    /// them, or forgets them. Returns the ones read, to plan again; a read that fails is tried
    /// again by the next sync.
    pub(super) async fn read_back(&mut self, report: &mut SyncReport) -> Vec<VirtualServerId> {
        let refused = std::mem::take(&mut self.read_back);
        let mut missing = std::mem::take(&mut self.verification.missing);
        missing.retain(|id| !refused.contains(id));
        let mut read = Vec::with_capacity(refused.len() + missing.len());
        for (id, listed_missing) in
            refused.into_iter().map(|id| (id, false)).chain(missing.into_iter().map(|id| (id, true)))
        {
            match self.read_one(&id).await {
                Ok(Some((server, dests))) => {
                    let differed = self.observed.verify_virtual_server(&server, &dests);
                    if listed_missing && differed {
                        tracing::warn!(virtual_server = %id, "altered by someone else; repairing");
                    } else if listed_missing {
                        tracing::debug!(virtual_server = %id, "held as recorded (the list skipped it)");
                    }
                }
                Ok(None) => {
                    if listed_missing && self.observed.virtual_server(&id).is_some() {
                        tracing::warn!(virtual_server = %id, "gone from the kernel; repairing");
                    }
                    self.observed.remove_virtual_server(&id);
                }
                Err(e) => {
                    report.read_failures += 1;
                    tracing::warn!(error = &e as &dyn std::error::Error, "cannot read back {id} (retried)");
                    if listed_missing {
                        self.verification.missing.insert(id);
                    } else {
                        self.read_back.insert(id);
                    }
                    continue;
                }
            }
            read.push(id);
        }
        read
    }

    async fn read_one(
        &mut self,
        id: &VirtualServerId,
    ) -> Result<Option<(VirtualServerEntry, Vec<RealServerEntry>)>, KernelError> {
        let Some(server) = self.kernel.virtual_server(id).await? else { return Ok(None) };
        let dests = self.kernel.real_servers(std::slice::from_ref(id)).await?.pop().unwrap_or_default();
        Ok(Some((server, dests)))
    }
}

/// Claims those of `read` that are desired and in the kernel: the proxy manages them from now
/// on, as a full sync's claim would. Returns whether that changed the ownership record.
pub(super) fn claim_read_back(observed: &mut Observed, read: &[VirtualServerId], desired: &DesiredState) -> bool {
    let claimed: Vec<VirtualServerId> = read
        .iter()
        .filter(|id| desired.virtual_server(id).is_some() && observed.virtual_server(id).is_some())
        .copied()
        .collect();
    observed.claim(claimed) > 0
}
