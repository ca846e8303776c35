//! Small builders for the scenario tests: k8s objects from JSON, and views of the desired state.
#![allow(dead_code)]

use std::net::IpAddr;

use ipvs::{Protocol, VirtualServerId};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{Config, Model};
use serde_json::{Value, json};

/// The node every scenario runs on.
pub const NODE: &str = "node-a";
/// Its IPv4 and IPv6 addresses.
pub const NODE_V4: &str = "192.168.0.10";
pub const NODE_V6: &str = "fd00:1::10";

/// Settings for [`NODE`].
pub fn config() -> Config {
    Config::new(NODE)
}

/// [`NODE`]'s addresses, one per family.
pub fn node_addresses() -> Vec<IpAddr> {
    vec![ip(NODE_V4), ip(NODE_V6)]
}

/// An empty model on [`NODE`] with its addresses.
pub fn new_model(config: Config) -> Model {
    let mut m = Model::new(config);
    m.set_node_addresses(node_addresses());
    m
}

/// [`Model::from_objects`] on [`NODE`] with its addresses.
pub fn from_objects<'a>(
    config: Config,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: Option<&Node>,
) -> (Model, Vec<model::Warning>) {
    from_objects_on(node_addresses(), config, services, slices, node)
}

/// [`Model::from_objects`] with the node addresses `addresses`.
pub fn from_objects_on<'a>(
    addresses: Vec<IpAddr>,
    config: Config,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: Option<&Node>,
) -> (Model, Vec<model::Warning>) {
    let (mut m, warnings) = Model::from_objects(config, services, slices, node);
    m.set_node_addresses(addresses);
    (m, warnings)
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A Service `default/<name>` with `spec` (and `extra` merged at the top level).
pub fn service(name: &str, spec: Value) -> Service {
    service_with(name, spec, json!({}))
}

/// A Service with extra top-level fields (metadata.annotations/labels go under `metadata`).
pub fn service_with(name: &str, spec: Value, extra: Value) -> Service {
    let mut v = json!({"metadata": {"namespace": "default", "name": name}, "spec": spec});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A slice `default/<name>` of Service `default/<service>`.
pub fn slice(name: &str, service: &str, family: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// A ready endpoint on `node`.
pub fn ep(addr: &str, node: &str) -> Value {
    json!({"addresses": [addr], "conditions": {"ready": true}, "nodeName": node})
}

/// An endpoint with explicit conditions.
pub fn ep_cond(addr: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [addr], "nodeName": node,
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

/// The Node object of [`NODE`] in `zone`.
pub fn node(zone: &str, internal_ip: &str) -> Node {
    node_named(NODE, zone, internal_ip)
}

/// The Node object `name` in `zone`.
pub fn node_named(name: &str, zone: &str, internal_ip: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": internal_ip}]},
    }))
    .unwrap()
}

pub fn tuple(protocol: Protocol, addr: &str, port: u16) -> VirtualServerId {
    VirtualServerId::Tuple { protocol, addr: ip(addr), port }
}

pub fn tcp(addr: &str, port: u16) -> VirtualServerId {
    tuple(Protocol::Tcp, addr, port)
}

/// The virtual servers of the desired state as `ipvsadm`-like names, ordered.
pub fn vs_names(model: &Model) -> Vec<String> {
    model.desired().virtual_servers().map(|(id, _)| id.to_string()).collect()
}

/// The real servers of one desired virtual server as `addr:port`, ordered; `None` if the
/// virtual server is not desired.
pub fn rs_of(model: &Model, id: &VirtualServerId) -> Option<Vec<String>> {
    model.desired().virtual_server(id).map(|v| v.real_servers.keys().map(|r| r.to_string()).collect())
}

/// The addresses to bind, as text.
pub fn bound(model: &Model) -> Vec<String> {
    model.desired().addresses().map(|a| a.to_string()).collect()
}

/// A model from a list of objects, asserting they raised no warnings.
pub fn model_of(services: &[Service], slices: &[EndpointSlice]) -> Model {
    let (m, warnings) = from_objects(config(), services, slices, None);
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    m
}
