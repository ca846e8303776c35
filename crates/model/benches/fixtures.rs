//! A synthetic cluster for the cost test and the benchmarks: `n` Services with one
//! EndpointSlice of 10 endpoints each; every fifth Service is a NodePort with two ports.
//! Shared by `benches/model.rs` and `tests/cost.rs` (included with `#[path]`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::{Config, Model, Warning};

/// Endpoints per Service.
pub const ENDPOINTS: u32 = 10;
/// The node the model runs on.
pub const NODE: &str = "node-0";

/// The settings of the synthetic node.
pub fn config() -> Config {
    let mut c = Config::new(NODE);
    c.cluster_cidrs = vec!["10.128.0.0/9".parse().unwrap()];
    c
}

/// The synthetic node's address (NodePorts listen on it).
pub fn node_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10))
}

/// The model of `services` and `slices` on the synthetic node: its address first, then the
/// slices, then the Services (each Service computed once, with all its endpoints).
pub fn build(services: &[Service], slices: &[EndpointSlice]) -> (Model, Vec<Warning>) {
    let mut model = Model::new(config());
    model.set_node_addresses(vec![node_address()]);
    let mut warnings = Vec::new();
    for slice in slices {
        warnings.extend(model.upsert_endpoint_slice(slice));
    }
    for svc in services {
        warnings.extend(model.upsert_service(svc));
    }
    (model, warnings)
}

fn meta(name: String, labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta { namespace: Some("bench".into()), name: Some(name), labels, ..ObjectMeta::default() }
}

/// Service `bench/svc-<i>`: ClusterIP `10.96.0.0 + i + 1`, port 80 (and 443 with a NodePort
/// for every fifth).
pub fn service(i: u32) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1).to_string();
    let node_port = i.is_multiple_of(5);
    let port = |name: &str, port: i32, np: i32| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        node_port: node_port.then_some(np),
        ..ServicePort::default()
    };
    let mut ports = vec![port("http", 80, 30000 + (i / 5 % 2000) as i32 * 2)];
    if node_port {
        ports.push(port("https", 443, 30001 + (i / 5 % 2000) as i32 * 2));
    }
    Service {
        metadata: meta(format!("svc-{i}"), None),
        spec: Some(ServiceSpec {
            type_: Some(if node_port { "NodePort" } else { "ClusterIP" }.into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The slice `bench/svc-<i>-abcde` of Service `i`: 10 ready endpoints on nodes spread over
/// 100; `generation` shifts the endpoint addresses by one, so alternating generations is a
/// real change of one endpoint.
pub fn slice(i: u32, generation: u32) -> EndpointSlice {
    let endpoints = (0..ENDPOINTS)
        .map(|j| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * (ENDPOINTS + 1)) + j + generation);
            Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(format!("node-{}", (i + j) % 100)),
                ..Endpoint::default()
            }
        })
        .collect();
    let port = |name: &str, port: i32| EndpointPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some("TCP".into()),
        ..EndpointPort::default()
    };
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints,
        metadata: meta(
            format!("svc-{i}-abcde"),
            Some(BTreeMap::from([("kubernetes.io/service-name".to_owned(), format!("svc-{i}"))])),
        ),
        ports: Some(vec![port("http", 8080), port("https", 8443)]),
    }
}

/// The whole synthetic cluster of `n` Services.
pub fn cluster(n: u32) -> (Vec<Service>, Vec<EndpointSlice>) {
    ((0..n).map(service).collect(), (0..n).map(|i| slice(i, 0)).collect())
}
