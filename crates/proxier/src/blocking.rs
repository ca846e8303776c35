//! Blocking calls made from the sync loop's task (`nft`, `iptables`, an nfnetlink batch the
//! kernel handles during its `sendmsg`), kept off the runtime's workers.

/// Runs `call`, which may block for seconds: on a multi-thread runtime the worker hands its
/// other tasks (the health and debug endpoints, the watches) to another thread meanwhile; on a
/// current-thread runtime (unit tests) it just runs.
pub(crate) fn blocking<T>(call: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread { tokio::task::block_in_place(call) } else { call() }
}
