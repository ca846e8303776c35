//! Kernel refusals that say the loop's record was wrong, not that the kernel cannot do the
//! write. A delete of what is already gone has reached its goal. An add of what is already
//! there, or an update of what is gone, means the virtual server is not as recorded: someone
//! else changed it, or a dump the record was taken from missed it (IPVS resumes a dump by
//! position in a table all network namespaces share, so another namespace's writes meanwhile
//! can make a dump skip an entry). Retried as it was, such a step would be refused every time
//! until the next whole read; the loop reads the virtual server back instead (`read_back`) and
//! plans it again.

use ipvs::{ErrorKind, Operation};
use model::Step;

use crate::kernel::KernelError;

/// What a refused step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// What the step was to do is already so (a delete of what is gone).
    Reached,
    /// The virtual server is not as recorded: read it back and plan it again.
    Drift,
    /// A failure: retried after the retry delay.
    Failed,
}

/// What the kernel's refusal `error` of `step` means.
pub(super) fn refusal(step: &Step, error: &KernelError) -> Refusal {
    let Step::Kernel(op) = step else { return Refusal::Failed };
    let Some(kind) = error.ipvs_kind() else { return Refusal::Failed };
    use ErrorKind::{Exists, NoSuchVirtualServer, NotFound};
    match (op, kind) {
        (Operation::DeleteVirtualServer(_), NoSuchVirtualServer)
        | (Operation::DeleteRealServer(..), NotFound | NoSuchVirtualServer) => Refusal::Reached,
        (Operation::AddVirtualServer(_), Exists)
        | (Operation::UpdateVirtualServer(_), NoSuchVirtualServer)
        | (Operation::AddRealServer(..), Exists | NoSuchVirtualServer)
        | (Operation::UpdateRealServer(..), NotFound | NoSuchVirtualServer) => Refusal::Drift,
        _ => Refusal::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Protocol, RealServer, VirtualServer, VirtualServerId};

    fn refused(op: Operation, errno: i32) -> Refusal {
        let error = KernelError::new(op.to_string(), ipvs::Error::from_errno(errno, op.to_string(), None));
        refusal(&Step::Kernel(op), &error)
    }

    #[test]
    fn only_refusals_that_reveal_the_kernel_state_are_not_failures() {
        let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: "10.96.0.1".parse().unwrap(), port: 80 };
        let vs = VirtualServer::new(id, "rr");
        let rs = RealServer::new("10.244.0.2".parse().unwrap(), 8080, 1);
        let (exists, esrch, enoent, einval) = (17, 3, 2, 22);
        let cases = [
            (Operation::DeleteVirtualServer(id), esrch, Refusal::Reached),
            (Operation::DeleteRealServer(id, rs.id), enoent, Refusal::Reached),
            (Operation::DeleteRealServer(id, rs.id), esrch, Refusal::Reached),
            (Operation::AddVirtualServer(vs.clone()), exists, Refusal::Drift),
            (Operation::UpdateVirtualServer(vs.clone()), esrch, Refusal::Drift),
            (Operation::AddRealServer(id, rs), exists, Refusal::Drift),
            (Operation::AddRealServer(id, rs), esrch, Refusal::Drift),
            (Operation::UpdateRealServer(id, rs), enoent, Refusal::Drift),
            // A missing scheduler module is ENOENT too: on an add, a failure.
            (Operation::AddVirtualServer(vs.clone()), enoent, Refusal::Failed),
            (Operation::AddRealServer(id, rs), einval, Refusal::Failed),
            (Operation::DeleteVirtualServer(id), exists, Refusal::Failed),
        ];
        for (op, errno, want) in cases {
            let text = op.to_string();
            assert_eq!(refused(op, errno), want, "{text} refused with {errno}");
        }
        let other = KernelError::new("add virtual server", "the socket failed");
        assert_eq!(refusal(&Step::Kernel(Operation::AddVirtualServer(vs)), &other), Refusal::Failed);
    }
}
