//! Handing the heap's free pages back to the kernel: once the first lists are in, then after
//! each periodic verification.
//!
//! A cold start decodes every Service and EndpointSlice on the runtime's threads; glibc keeps
//! what that frees inside its per-thread arenas, resident, where the full sync that follows (on
//! another thread, its own arena) cannot reuse it. Trimmed once at that moment, the daemon's
//! peak resident size is the model plus the full sync, not that plus the lists' leftovers.
//! In the steady state the same happens more slowly: each change's sync frees what its watch
//! event's decoding allocated, in either arena, and the verification's round start (a list of
//! every virtual server) needs fresh room beside it. Trimmed after each verification (every
//! `syncPeriod`; a walk of the free lists, no more), the resident size stays what is in use.

use std::sync::mpsc;

use model::Model;
use proxier::{SyncObserver, SyncReport};

/// `observer`, with the heap trimmed when the first lists are complete and after each
/// verification sync.
pub(crate) struct TrimHeap<O> {
    observer: O,
    /// To the thread that trims after verifications: `synced` runs under the model's lock,
    /// which a trim (a walk of every free chunk, an `madvise` per free run of pages) must not
    /// hold up. `None` when that thread could not be started (then no such trim).
    trimmer: Option<mpsc::Sender<()>>,
}

impl<O> TrimHeap<O> {
    /// Wraps `observer`; starts the trimming thread (idle until a verification).
    pub(crate) fn new(observer: O) -> TrimHeap<O> {
        let (sender, requests) = mpsc::channel::<()>();
        let started = std::thread::Builder::new().name("heap-trim".into()).spawn(move || {
            while requests.recv().is_ok() {
                // Requests queued meanwhile are served by this one trim.
                while requests.try_recv().is_ok() {}
                trim("after a verification");
            }
        });
        if let Err(e) = &started {
            tracing::warn!(error = e as &dyn std::error::Error, "no heap trimming after verifications");
        }
        TrimHeap { observer, trimmer: started.ok().map(|_| sender) }
    }
}

impl<O: SyncObserver> SyncObserver for TrimHeap<O> {
    fn synced(&mut self, report: &SyncReport, model: &Model) {
        self.observer.synced(report, model);
        if report.verification
            && let Some(trimmer) = &self.trimmer
        {
            let _ = trimmer.send(());
        }
    }

    fn lists_complete(&mut self) {
        self.observer.lists_complete();
        // Before the full sync allocates: at once, on this thread (no lock is held).
        trim("after the first lists");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim(when: &'static str) {
    // SAFETY: malloc_trim only walks the allocator's own free lists and advises the kernel
    // that whole free pages in them are unneeded; no memory in use is touched.
    let start = std::time::Instant::now();
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "free heap pages handed back {when} in {:.3?}", start.elapsed());
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim(_when: &'static str) {}
