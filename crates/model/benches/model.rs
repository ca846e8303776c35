//! `cargo bench -p model`: full builds at 1k, 10k and 50k Services, and one EndpointSlice update
//! with its scoped plan at 10k and 50k; then the update-to-full-build ratio at 10k, both measured
//! in this run.

mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use model::{GracefulRemovals, Model, Observed, Scope};

/// A model of `n` Services, the kernel programmed to match, and the next slice generation.
struct Programmed {
    model: Model,
    observed: Observed,
    graceful: GracefulRemovals,
}

impl Programmed {
    fn new(n: u32) -> Programmed {
        let (services, slices) = fixtures::cluster(n);
        let (mut model, _) = fixtures::build(&services, &slices);
        let mut observed = Observed::new();
        let mut graceful = GracefulRemovals::new();
        for step in &model.plan(&Observed::new(), &Scope::All, &mut graceful, Duration::ZERO).steps {
            observed.apply(step);
        }
        model.take_changes();
        Programmed { model, observed, graceful }
    }

    /// Applies a prepared slice update, plans the change and applies the plan to the observed
    /// state (as the daemon does after the kernel accepted it). Returns the plan's length.
    fn update_prepared(&mut self, slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> usize {
        self.model.upsert_endpoint_slice(slice);
        let changes = self.model.take_changes();
        let plan = self.model.plan(&self.observed, &Scope::Only(changes), &mut self.graceful, Duration::ZERO);
        for step in &plan.steps {
            self.observed.apply(step);
        }
        plan.len()
    }
}

fn full_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_build");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for n in [1_000u32, 10_000, 50_000] {
        let (services, slices) = fixtures::cluster(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| fixtures::build(&services, &slices).0.desired().len())
        });
    }
    group.finish();
}

fn one_slice_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_slice_update_and_plan");
    group.sample_size(50).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in [10_000u32, 50_000] {
        let mut p = Programmed::new(n);
        // Two prepared slice generations of one NodePort Service (4 virtual servers), alternated
        // so each iteration is a real change: one endpoint out, one in.
        let slices = [fixtures::slice(n / 2, 1), fixtures::slice(n / 2, 0)];
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                p.update_prepared(&slices[k % 2])
            })
        });
    }
    group.finish();
}

/// The acceptance ratio at 10k, both sides measured here with the same clock: the best of 3
/// full builds against the median of 1,001 one-slice updates with their plans.
fn ratio_at_10k() {
    let (services, slices) = fixtures::cluster(10_000);
    let full = (0..3)
        .map(|_| {
            let start = Instant::now();
            black_box(fixtures::build(&services, &slices));
            start.elapsed()
        })
        .min()
        .unwrap_or_default();
    let mut p = Programmed::new(10_000);
    let prepared = [fixtures::slice(5_000, 1), fixtures::slice(5_000, 0)];
    let mut times: Vec<Duration> = (0..1001)
        .map(|k| {
            let start = Instant::now();
            black_box(p.update_prepared(&prepared[k % 2]));
            start.elapsed()
        })
        .collect();
    times.sort();
    let update = times[times.len() / 2];
    let ratio = full.as_secs_f64() / update.as_secs_f64().max(1e-9);
    println!(
        "ratio at 10k: full build {full:.2?}, one-slice update + plan {update:.2?} (median): the update costs 1/{ratio:.0} of the full build (target: less than 1/500)"
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    full_build(&mut c);
    one_slice_update(&mut c);
    c.final_summary();
    ratio_at_10k();
}
