//! What the sync loop needs of the kernel, as a trait so that the loop's own logic (gating,
//! coalescing, retries) can be unit-tested with a recording implementation. The real
//! implementation is [`NetlinkKernel`](crate::NetlinkKernel) (the `ipvs` crate's netlink client
//! and dummy link); its behaviour against a kernel is tested in the VM, never with a stand-in.

use std::future::Future;
use std::net::IpAddr;

use ipvs::{Operation, RealServerEntry, Table, VirtualServerEntry, VirtualServerId};
use netfilter::StaleFlows;

/// A kernel call that failed, naming what it was doing (once: a cause that already begins
/// with it, as the `ipvs` crate's errors do, is shown alone).
#[derive(Debug, thiserror::Error)]
#[error("{}", joined(.what, .source.as_ref()))]
pub struct KernelError {
    /// What was being done (`dump the IPVS table`, `bind 10.96.0.1 to kube-ipvs0`, ...).
    pub what: String,
    /// Why it failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// `what: source`, or `source` alone when it already begins with `what`.
fn joined(what: &str, source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let cause = source.to_string();
    if cause.starts_with(what) { cause } else { format!("{what}: {cause}") }
}

impl KernelError {
    /// An error for `what`, caused by `source`.
    pub fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> KernelError {
        KernelError { what: what.into(), source: source.into() }
    }

    /// What the IPVS client said went wrong, when the cause is its error.
    pub(crate) fn ipvs_kind(&self) -> Option<ipvs::ErrorKind> {
        self.source.downcast_ref::<ipvs::Error>().map(ipvs::Error::kind)
    }
}

/// The kernel as the sync loop sees it: the IPVS table, the dummy link's addresses and the
/// conntrack entries of stale flows. Binds and IPVS batches take `&self`: the loop runs them
/// at the same time.
pub trait Kernel: Send {
    /// A fresh dump: the whole IPVS table and the addresses bound on the dummy link.
    fn observe(&mut self) -> impl Future<Output = Result<(Table, Vec<IpAddr>), KernelError>> + Send;

    /// The real servers of each of `ids`, in order (one dump each; empty for one that is gone),
    /// with counters fresh enough to plan graceful removals with.
    fn real_servers(
        &mut self,
        ids: &[VirtualServerId],
    ) -> impl Future<Output = Result<Vec<Vec<RealServerEntry>>, KernelError>> + Send;

    /// One virtual server's configuration as the kernel holds it, or `None` if it is gone.
    fn virtual_server(
        &mut self,
        id: &VirtualServerId,
    ) -> impl Future<Output = Result<Option<VirtualServerEntry>, KernelError>> + Send;

    /// Adds each address to the dummy link (already present is success); one result per
    /// address, in order. The work begins when this is called, not when the future is first
    /// polled, and goes on without the caller: the loop writes the IPVS batches and the
    /// nftables side meanwhile, and awaits the future for the results.
    fn bind(&self, addrs: Vec<IpAddr>) -> impl Future<Output = Vec<Result<(), KernelError>>> + Send + 'static;

    /// Removes each address from the dummy link (already absent is success); one result per
    /// address, in order.
    fn unbind(&self, addrs: &[IpAddr]) -> impl Future<Output = Vec<Result<(), KernelError>>> + Send;

    /// Runs `ops` as one batch; one result per operation, in order. The outer error means the
    /// batch as a whole could not be run (e.g. the socket failed).
    fn apply(
        &self,
        ops: &[Operation],
    ) -> impl Future<Output = Result<Vec<Result<(), KernelError>>, KernelError>> + Send;

    /// Deletes the conntrack entries each of `flows` names; one result per item (how many
    /// entries went).
    fn forget(&mut self, flows: &[StaleFlows]) -> impl Future<Output = Vec<Result<usize, KernelError>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPVS error names its operation already: the operation is not said twice (before:
    /// `add virtual server TCP 10.96.0.10:80: add virtual server TCP 10.96.0.10:80: already exists`).
    #[test]
    fn the_object_is_named_once() {
        let op = "add virtual server TCP 10.96.0.10:80";
        let refused = KernelError::new(op, ipvs::Error::from_errno(17, op, None));
        assert_eq!(refused.to_string(), "add virtual server TCP 10.96.0.10:80: already exists");
        let io = KernelError::new("bind 10.96.0.10 to kube-ipvs0", "permission denied");
        assert_eq!(io.to_string(), "bind 10.96.0.10 to kube-ipvs0: permission denied");
    }
}
