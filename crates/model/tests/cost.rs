//! Cost: one EndpointSlice update in a model of 10,000 Services recomputes only that Service,
//! and its plan touches only that Service's virtual servers. Counts, not time (time is in
//! `cargo bench -p model`).

#[path = "../benches/fixtures.rs"]
mod fixtures;

use std::time::Duration;

use model::{GracefulRemovals, Observed, Scope};

#[test]
fn one_slice_update_in_10k_services_recomputes_one_service_and_plans_only_its_virtual_servers() {
    let (services, slices) = fixtures::cluster(10_000);
    let (mut m, warnings) = fixtures::build(&services, &slices);
    assert!(warnings.is_empty());
    assert_eq!(m.desired().len(), 10_000 + 2 * 2_000 + 2_000, "ClusterIPs, 2 ports on every fifth, NodePorts");
    assert_eq!(m.desired().real_server_count(), m.desired().len() * 10);

    let mut observed = Observed::new();
    let mut graceful = GracefulRemovals::new();
    for step in &m.plan(&Observed::new(), &Scope::All, &mut graceful, Duration::ZERO).steps {
        observed.apply(step);
    }
    m.take_changes();

    // (Service index, its virtual servers)
    let cases = [(1234u32, 1usize), (5000, 4)];
    for (i, vs_count) in cases {
        let before = m.stats().services_recomputed;
        m.upsert_endpoint_slice(&fixtures::slice(i, 1));
        assert_eq!(m.stats().services_recomputed - before, 1, "svc-{i}: only its Service is recomputed");

        let changes = m.take_changes();
        let own: std::collections::BTreeSet<_> =
            m.service_info("bench", &format!("svc-{i}")).unwrap().virtual_servers.iter().copied().collect();
        assert_eq!(own.len(), vs_count);
        assert_eq!(changes.virtual_servers, own, "svc-{i}: changes name only its virtual servers");

        let plan = m.plan(&observed, &Scope::Only(changes), &mut graceful, Duration::ZERO);
        assert_eq!(plan.touched_virtual_servers(), own, "svc-{i}: the plan touches only its virtual servers");
        // One endpoint out, one in, on each virtual server.
        assert_eq!(plan.len(), 2 * vs_count, "svc-{i}: {plan:?}");
        for step in &plan.steps {
            observed.apply(step);
        }
    }
    let full = m.plan(&observed, &Scope::All, &mut graceful, Duration::ZERO);
    assert!(full.is_empty(), "the incremental path left the kernel equal to the desired state");
}

#[test]
fn node_address_change_recomputes_only_services_on_node_addresses() {
    let (services, slices) = fixtures::cluster(2_000);
    let (mut m, _) = fixtures::build(&services, &slices);
    let before = m.stats().services_recomputed;
    m.set_node_addresses(vec!["192.168.0.11".parse().unwrap()]);
    assert_eq!(m.stats().services_recomputed - before, 400, "the NodePort fifth only");
}
