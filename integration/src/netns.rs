//! Running a test in a fresh network namespace of its own.
//!
//! IPVS tables, links, addresses and sysctls are per network namespace, so a test that runs in
//! its own namespace cannot see or disturb any other: tests run in parallel, and what one leaves
//! behind dies with its namespace.

use std::future::Future;
use std::io;

/// Runs `test` on a new thread that has first moved into a fresh network namespace, with a
/// current-thread tokio runtime, and returns its output; a panic in `test` is re-raised here.
///
/// `unshare(CLONE_NEWNET)` moves only the calling thread, so everything the test creates on that
/// thread (netlink sockets, child processes such as `ipvsadm`, threads it spawns) lives in the
/// new namespace. The namespace is prepared like the VM's root one: `lo` up, IPv4 forwarding on
/// and `net.ipv4.vs.conntrack=1`, which the data path through IPVS needs.
///
/// Panics when the namespace cannot be made (not root, or no network namespaces): the test
/// cannot run at all then.
pub fn in_netns<F, Fut, T>(test: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::Builder::new().name("netns-test".into()).spawn(move || {
        if let Err(err) = enter_fresh_netns() {
            panic!("cannot enter a fresh network namespace: {err}");
        }
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => panic!("cannot build a tokio runtime: {err}"),
        };
        runtime.block_on(test())
    });
    match thread.map(|t| t.join()) {
        Ok(Ok(output)) => output,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(err) => panic!("cannot spawn the test thread: {err}"),
    }
}

/// Moves the calling thread into a new network namespace and prepares it (see [`in_netns`]).
pub(crate) fn enter_fresh_netns() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it only changes the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    crate::command::ip(&["link", "set", "lo", "up"]).map_err(io::Error::other)?;
    // /proc/sys/net resolves against the writing thread's namespace.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    match std::fs::write("/proc/sys/net/ipv4/vs/conntrack", "1") {
        // Without IPVS loaded there is no such sysctl; tests that need IPVS will say so.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
