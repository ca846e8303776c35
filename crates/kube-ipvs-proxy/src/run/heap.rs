//! Handing the heap's free pages back to the kernel once the first lists are in.
//!
//! A cold start decodes every Service and EndpointSlice on the runtime's threads; glibc keeps
//! what that frees inside its per-thread arenas, resident, where the full sync that follows (on
//! another thread, its own arena) cannot reuse it. Trimmed once at that moment, the daemon's
//! peak resident size is the model plus the full sync, not that plus the lists' leftovers.

use model::Model;
use proxier::{SyncObserver, SyncReport};

/// `observer`, with the heap trimmed when the first lists are complete.
pub(crate) struct TrimAfterLists<O>(pub O);

impl<O: SyncObserver> SyncObserver for TrimAfterLists<O> {
    fn synced(&mut self, report: &SyncReport, model: &Model) {
        self.0.synced(report, model);
    }

    fn lists_complete(&mut self) {
        self.0.lists_complete();
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists and advises the kernel
    // that whole free pages in them are unneeded; no memory in use is touched.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "free heap pages handed back after the first lists");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
