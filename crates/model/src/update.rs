//! The model's inputs as the sources deliver them: one change at a time, from a cluster watch,
//! a file, or the host's address notifications.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One change to one kind of object.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<K> {
    /// The object was created or changed (or is seen for the first time).
    Apply(K),
    /// The object is gone. After a relist only its name, namespace and service-name label are filled.
    Delete(K),
    /// A complete list has been applied: every object that exists has been seen.
    Listed,
}

/// One change from a source.
// Updates are moved once from a source into the model; boxing them would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A Service change.
    Service(Change<Service>),
    /// An EndpointSlice change.
    EndpointSlice(Change<EndpointSlice>),
    /// A change of this node's Node object.
    Node(Change<Node>),
    /// The node's addresses NodePorts may use, all of them, sorted and deduplicated: the first
    /// one delivered is the complete list, as a watch's first `Listed` is.
    NodeAddresses(Vec<IpAddr>),
    /// These addresses were just removed from the proxy's dummy link, by anyone (this proxy
    /// included): those still wanted there are bound again at the next sync.
    Unbound(Vec<IpAddr>),
}
