//! The desired and observed states serialize to JSON (for `debug render`) and read back equal.

mod common;

use std::time::Duration;

use common::*;
use model::{DesiredState, GracefulRemovals, Observed, Scope};
use serde_json::json;

#[test]
fn desired_observed_and_graceful_states_round_trip_through_json() {
    let svc = service(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let mut m = model_of(
        &[svc],
        &[slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.0.1", NODE), ep("10.0.0.2", NODE)]))],
    );
    let mut observed = Observed::new();
    let mut graceful = GracefulRemovals::new();
    for step in &m.plan(&observed, &Scope::All, &mut graceful, Duration::ZERO).steps {
        observed.apply(step);
    }
    let vs = tcp("10.96.0.10", 80);
    let rs = ipvs::RealServerId { addr: ip("10.0.0.2"), port: 8080 };
    observed.set_connections(&vs, &rs, ipvs::ConnectionCounts { active: 1, inactive: 0, persistent: 0 });
    // The NodePort's copy of it is counted idle: deleted at once, not drained.
    observed.set_connections(&tcp(NODE_V4, 30080), &rs, ipvs::ConnectionCounts::default());
    m.upsert_endpoint_slice(&slice("web-1", "web", "IPv4", json!([{"port": 8080}]), json!([ep("10.0.0.1", NODE)])));
    for step in &m.plan(&observed, &Scope::All, &mut graceful, Duration::ZERO).steps {
        observed.apply(step);
    }
    assert_eq!(graceful.len(), 1);

    let text = serde_json::to_string(m.desired()).unwrap();
    assert!(text.contains("10.96.0.10") && text.contains("default"), "{text}");
    assert_eq!(&serde_json::from_str::<DesiredState>(&text).unwrap(), m.desired());
    let text = serde_json::to_string(&observed).unwrap();
    assert_eq!(serde_json::from_str::<Observed>(&text).unwrap(), observed);
    let text = serde_json::to_string(&graceful).unwrap();
    assert_eq!(serde_json::from_str::<GracefulRemovals>(&text).unwrap(), graceful);
}
