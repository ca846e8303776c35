//! `cargo bench -p model --bench memory`: the heap the model and the applied-state record hold
//! at 10,000 and 50,000 Services (the fixture of `benches/model.rs`), counted by a global
//! allocator, so that the daemon's resident memory can be told apart from what it keeps.

mod fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use model::{GracefulRemovals, Observed, Scope};

/// The system allocator, counting the bytes live now and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    for n in [10_000u32, 50_000] {
        let (services, slices) = fixtures::cluster(n);
        let objects = live();
        let mut model = model::Model::new(fixtures::config());
        model.set_node_addresses(vec![fixtures::node_address()]);
        for slice in &slices {
            model.upsert_endpoint_slice(slice);
        }
        let with_slices = live();
        for svc in &services {
            model.upsert_service(svc);
        }
        model.take_changes();
        let with_model = live();
        drop((services, slices));
        let before_copy = live();
        let desired = model.desired().clone();
        let desired_bytes = live() - before_copy;
        drop(desired);
        PEAK.store(live(), Ordering::Relaxed);
        let before_plan = live();
        let mut observed = Observed::new();
        let plan = model.plan(&Observed::new(), &Scope::All, &mut GracefulRemovals::new(), Duration::ZERO);
        let plan_bytes = live() - before_plan;
        for step in &plan.steps {
            observed.apply(step);
        }
        let steps = plan.len();
        drop(plan);
        let observed_bytes = live() - before_plan;
        let peak = PEAK.load(Ordering::Relaxed) - before_plan;
        let per = |b: usize| b / n as usize;
        println!(
            "{n} Services ({} virtual servers, {steps} steps): model {} ({} B per Service, \
             of which the slices {} B and the desired state {} B), applied-state record {} ({} B), plan {} (transient), peak while planning and applying {} above the model",
            model.desired().len(),
            mib(with_model - objects),
            per(with_model - objects),
            per(with_slices - objects),
            per(desired_bytes),
            mib(observed_bytes),
            per(observed_bytes),
            mib(plan_bytes),
            mib(peak),
        );
        if n == 10_000 {
            churn(&mut model, &mut observed, n);
        }
        drop((model, observed));
    }
}

/// What churn leaves held: 14,400 changes (twenty minutes of the daemon bench's 12 a second),
/// each an EndpointSlice whose endpoints moved, planned and applied to the record; each 360
/// (a `syncPeriod`) a verification finds the real servers pending graceful removal idle and
/// removes them. The live heap every 1,200 changes, against before the churn: past the first
/// 10,000 every Service has changed, so a heap still growing then is a leak, and one that grew
/// until then is slack each changed Service keeps.
fn churn(model: &mut model::Model, observed: &mut Observed, n: u32) {
    let mut graceful = GracefulRemovals::new();
    let start = live();
    let mut trace = Vec::new();
    for k in 0..14_400u32 {
        let now = Duration::from_millis(u64::from(k) * 83);
        model.upsert_endpoint_slice(&fixtures::slice((k * 7_919) % n, 1 + k % 100));
        let changes = model.take_changes();
        let plan = model.plan(observed, &Scope::Only(changes), &mut graceful, now);
        for step in &plan.steps {
            observed.apply(step);
        }
        if k % 360 == 359 {
            let mut idle = model::Changes::new();
            for (vs, rs, _) in graceful.iter() {
                observed.set_connections(vs, rs, ipvs::ConnectionCounts::default());
                idle.virtual_servers.insert(*vs);
            }
            let plan = model.plan(observed, &Scope::Only(idle), &mut graceful, now);
            for step in &plan.steps {
                observed.apply(step);
            }
        }
        if k % 1_200 == 1_199 {
            trace.push(format!(
                "{}: {:+.1} KiB ({} pending)",
                k + 1,
                (live() as f64 - start as f64) / 1024.0,
                graceful.len()
            ));
        }
    }
    println!("{n} Services, churn (live heap against before it, every 1,200 changes): {}", trace.join(", "));
}
