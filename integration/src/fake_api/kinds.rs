//! The object kinds the fake API server stores, with their REST coordinates.

use k8s_openapi::Resource;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// A kind of object the fake API server stores and serves (list, watch, get).
///
/// The coordinates (apiVersion, kind, plural) come from k8s-openapi so that they match what
/// `kube::Api<K>` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Service, namespaced.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice, namespaced.
    EndpointSlice,
    /// `v1` Node, cluster-scoped.
    Node,
}

impl Kind {
    /// Every stored kind.
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

    /// The `apiVersion` of objects of this kind (`v1`, `discovery.k8s.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service => Service::API_VERSION,
            Kind::EndpointSlice => EndpointSlice::API_VERSION,
            Kind::Node => Node::API_VERSION,
        }
    }

    /// The `kind` field of objects of this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => Service::KIND,
            Kind::EndpointSlice => EndpointSlice::KIND,
            Kind::Node => Node::KIND,
        }
    }

    /// The plural resource name used in URLs (`services`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => Service::URL_PATH_SEGMENT,
            Kind::EndpointSlice => EndpointSlice::URL_PATH_SEGMENT,
            Kind::Node => Node::URL_PATH_SEGMENT,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node)
    }

    /// The kind named by an object's `apiVersion` and `kind` fields.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// The kind served under `group_version` (`v1`, `discovery.k8s.io/v1`) as `plural`.
    pub fn from_resource(group_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.api_version() == group_version && k.plural() == plural)
    }

    /// The kind named by a plural or singular, case-insensitive (`services`, `Service`,
    /// `endpointslice`): what the control API and the command line accept.
    pub fn from_word(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural().eq_ignore_ascii_case(word) || k.name().eq_ignore_ascii_case(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type(kind.api_version(), kind.name()), Some(kind));
            assert_eq!(Kind::from_resource(kind.api_version(), kind.plural()), Some(kind));
            assert_eq!(Kind::from_word(kind.plural()), Some(kind));
        }
        assert_eq!(Kind::EndpointSlice.api_version(), "discovery.k8s.io/v1");
        assert_eq!(Kind::from_type("v1", "Pod"), None);
        assert_eq!(Kind::from_resource("v1", "endpointslices"), None);
    }
}
