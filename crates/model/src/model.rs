//! The incremental store: objects in, desired state kept current, changes recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::build::{NodeFacts, build_service};
use crate::changes::{Changes, Scope};
use crate::claims::Claims;
use crate::config::{Config, NodePortAddress};
use crate::desired::{DesiredState, ServiceInfo};
use crate::endpoints::{ParsedSlice, parse_slice};
use crate::graceful::GracefulRemovals;
use crate::names::ServiceKey;
use crate::observed::Observed;
use crate::plan::{Plan, PlanPolicy, plan};
use crate::service::{Parsed, ServiceSpec, parse_service};
use crate::service_slices::ServiceSlices;
use crate::warning::Warning;

/// The node label naming its zone, for topology hints.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A slice's `namespace/name`, one allocation (a namespace has no `/`).
type SliceKey = Box<str>;

/// The key of slice `name` in `namespace`.
fn slice_key(namespace: &str, name: &str) -> SliceKey {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The name part of a [`SliceKey`].
fn slice_name(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, name)| name)
}

/// Counters showing how much work the model did: the proof that an update costs its own size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Services the proxy handles.
    pub services: usize,
    /// EndpointSlices held (including those whose Service is not known yet).
    pub endpoint_slices: usize,
    /// How many times a Service's virtual servers were computed since the model was made.
    pub services_recomputed: u64,
}

/// The service-state model: holds the proxy's Services, EndpointSlices and node facts and keeps
/// the [`DesiredState`] current as they change, recomputing only the Services a change concerns.
///
/// Equal inputs give an equal model whatever the order of updates.
#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    node: NodeFacts,
    /// Boxed: a spec is larger than the table's slot, and a hash table keeps an eighth or more
    /// of its slots empty.
    services: HashMap<ServiceKey, Box<ServiceSpec>>,
    /// The Service each stored slice belongs to.
    slice_owner: HashMap<SliceKey, ServiceKey>,
    /// Slices per Service by name, ordered so that duplicate endpoints merge the same way each time.
    slices_by_service: HashMap<ServiceKey, ServiceSlices>,
    infos: BTreeMap<ServiceKey, ServiceInfo>,
    /// The desired state and the claims on it.
    claims: Claims,
    changes: Changes,
    recomputed: u64,
}

impl Model {
    /// An empty model with `config`, no node address yet ([`Model::set_node_addresses`]).
    pub fn new(config: Config) -> Model {
        Model {
            node: NodeFacts::default(),
            config,
            services: HashMap::new(),
            slice_owner: HashMap::new(),
            slices_by_service: HashMap::new(),
            infos: BTreeMap::new(),
            claims: Claims::default(),
            changes: Changes::new(),
            recomputed: 0,
        }
    }

    /// A model built from whole lists, with every warning they raise.
    pub fn from_objects<'a>(
        config: Config,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        node: Option<&Node>,
    ) -> (Model, Vec<Warning>) {
        let mut model = Model::new(config);
        let mut warnings = node.map(|n| model.set_node(n)).unwrap_or_default();
        // Slices first: each Service is then computed once, with all its endpoints.
        for slice in slices {
            warnings.extend(model.upsert_endpoint_slice(slice));
        }
        for svc in services {
            warnings.extend(model.upsert_service(svc));
        }
        (model, warnings)
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds or replaces a Service. A Service the proxy does not handle (headless, ExternalName,
    /// another proxy's) or a malformed one is treated as absent; the warnings say why.
    pub fn upsert_service(&mut self, svc: &Service) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let parsed = parse_service(svc, &self.config, &mut warnings);
        // The spec's own key when there is one: every copy kept shares its allocation.
        let key = match &parsed {
            Parsed::Handled(spec) => spec.key.clone(),
            Parsed::Ignored => ServiceKey::new(
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default(),
            ),
        };
        match parsed {
            Parsed::Handled(spec) => {
                self.services.insert(key.clone(), Box::new(spec));
            }
            Parsed::Ignored => {
                self.services.remove(&key);
            }
        }
        self.recompute(&key, &mut warnings);
        warnings
    }

    /// Removes Service `namespace/name`; its slices are kept for when it comes back.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = ServiceKey::new(namespace, name);
        if self.services.remove(&key).is_some() {
            self.recompute(&key, &mut Vec::new());
        }
    }

    /// Adds or replaces an EndpointSlice and recomputes its Service (and its former Service if
    /// the slice moved). A malformed slice is treated as absent; the warnings say why.
    pub fn upsert_endpoint_slice(&mut self, slice: &EndpointSlice) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let key = slice_key(namespace, name);
        let parsed = if name.is_empty() {
            warnings
                .push(Warning::new(format!("EndpointSlice {namespace}/"), "no metadata.name; EndpointSlice skipped"));
            ParsedSlice::Ignored
        } else {
            parse_slice(slice, &self.config.node_name, &mut warnings)
        };
        let old = self.detach_slice(&key);
        if let ParsedSlice::Handled(s) = parsed {
            let service = s.service.clone();
            self.slices_by_service.entry(service.clone()).or_default().insert(name.to_owned(), s);
            self.slice_owner.insert(key, service.clone());
            if old.as_ref() != Some(&service)
                && let Some(old) = old
            {
                self.recompute(&old, &mut warnings);
            }
            self.recompute(&service, &mut warnings);
        } else if let Some(old) = old {
            self.recompute(&old, &mut warnings);
        }
        warnings
    }

    /// Removes EndpointSlice `namespace/name` and recomputes its Service.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        if let Some(service) = self.detach_slice(&slice_key(namespace, name)) {
            self.recompute(&service, &mut Vec::new());
        }
    }

    /// Takes a slice out of the store; returns the Service it belonged to.
    fn detach_slice(&mut self, key: &str) -> Option<ServiceKey> {
        let service = self.slice_owner.remove(key)?;
        if let Some(slices) = self.slices_by_service.get_mut(&service) {
            slices.remove(slice_name(key));
            if slices.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        Some(service)
    }

    /// Takes this node's zone (label `topology.kubernetes.io/zone`) and primary addresses (for
    /// `nodePortAddresses: [primary]`) from its Node object; recomputes the Services they affect
    /// when they changed. A Node whose name is not `config.node_name` is another node's: it
    /// changes nothing and is warned about.
    pub fn set_node(&mut self, node: &Node) -> Vec<Warning> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name != self.config.node_name {
            return vec![Warning::new(
                format!("Node {name}"),
                format!("not this node ({}); Node ignored", self.config.node_name),
            )];
        }
        let zone = node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned();
        let primary_ips = primary_ips(node);
        let mut warnings = Vec::new();
        // Nothing in the desired state depends on them: the netfilter side reads them.
        self.node.pod_cidrs = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone().or_else(|| s.pod_cidr.clone().map(|c| vec![c])))
            .unwrap_or_default()
            .iter()
            .filter_map(|text| match crate::prefix::parse_prefix(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    warnings.push(Warning::new(format!("Node {name}"), format!("spec.podCIDRs: {e}; ignored")));
                    None
                }
            })
            .collect();
        if zone == self.node.zone && primary_ips == self.node.primary_ips {
            return warnings;
        }
        let zone_changed = zone != self.node.zone;
        let primary_matters =
            primary_ips != self.node.primary_ips && self.config.node_port_addresses.contains(&NodePortAddress::Primary);
        self.node.zone = zone;
        self.node.primary_ips = primary_ips;
        // The zone matters only to Services with zone hints, the primary addresses only to those
        // on node addresses and only with `nodePortAddresses: [primary]`; finding them reads the
        // store but recomputes nothing else.
        let zone_hinted = |key: &ServiceKey| {
            self.slices_by_service
                .get(key)
                .is_some_and(|slices| slices.values().any(|s| s.endpoints.iter().any(|e| !e.zone_hints().is_empty())))
        };
        let keys: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(k, s)| (zone_changed && zone_hinted(k)) || (primary_matters && s.depends_on_node_addresses()))
            .map(|(k, _)| k.clone())
            .collect();

        for key in keys {
            self.recompute(&key, &mut warnings);
        }
        warnings
    }

    /// Replaces the node addresses NodePorts listen on; recomputes only Services with NodePorts
    /// or LoadBalancer IPs.
    pub fn set_node_addresses(&mut self, addresses: Vec<IpAddr>) {
        if addresses == self.node.addresses {
            return;
        }
        self.node.addresses = addresses;
        let keys: Vec<ServiceKey> =
            self.services.iter().filter(|(_, s)| s.depends_on_node_addresses()).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.recompute(&key, &mut Vec::new());
        }
    }

    /// The node's pod CIDRs from its Node object (`spec.podCIDRs`), for `detectLocalMode: NodeCIDR`.
    pub fn node_pod_cidrs(&self) -> &[ipnet::IpNet] {
        &self.node.pod_cidrs
    }

    /// The node addresses NodePorts listen on, as last set.
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node.addresses
    }

    /// The desired state.
    pub fn desired(&self) -> &DesiredState {
        &self.claims.desired
    }

    /// What changed in the desired state since the last call (or since the model was made).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Per-Service facts for health checks, masquerade and source filtering.
    pub fn service_info(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        self.infos.get(&ServiceKey::new(namespace, name))
    }

    /// The addresses of `service`'s endpoints on this node, whatever their condition: the
    /// endpoints that can reach themselves through the Service (hairpin). Costs the Service's
    /// own slices, not the cluster.
    pub fn local_endpoints(&self, service: &ServiceKey) -> BTreeSet<IpAddr> {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(|slice| slice.endpoints.iter())
            .filter(|e| e.local)
            .map(|e| e.addr)
            .collect()
    }

    /// Every handled Service's facts, ordered by key.
    pub fn service_infos(&self) -> impl ExactSizeIterator<Item = &ServiceInfo> {
        self.infos.values()
    }

    /// Work counters.
    pub fn stats(&self) -> ModelStats {
        ModelStats {
            services: self.services.len(),
            endpoint_slices: self.slice_owner.len(),
            services_recomputed: self.recomputed,
        }
    }

    /// What a plan may touch: the settings' exclusions and graceful time.
    pub fn plan_policy(&self) -> PlanPolicy {
        PlanPolicy::from_config(&self.config)
    }

    /// [`plan`] from `observed` to this model's desired state with this model's policy.
    pub fn plan(&self, observed: &Observed, scope: &Scope, graceful: &mut GracefulRemovals, now: Duration) -> Plan {
        plan(&self.claims.desired, observed, &self.plan_policy(), scope, graceful, now)
    }

    /// Recomputes Service `key` from what is stored and updates the desired state, recording
    /// which virtual servers changed.
    fn recompute(&mut self, key: &ServiceKey, warnings: &mut Vec<Warning>) {
        let old_ids = self.infos.remove(key).map(|i| i.virtual_servers).unwrap_or_default();
        let new = match self.services.get(key) {
            Some(spec) => {
                self.recomputed += 1;
                let slices = self.slices_by_service.get(key).into_iter().flat_map(|s| s.values());
                Some(build_service(spec, slices, &self.config, &self.node))
            }
            None => None,
        };
        let (vss, info) = match new {
            Some((vss, info)) => (vss, Some(info)),
            None => (Vec::new(), None),
        };
        self.claims.replace(key, &old_ids, vss, &mut self.changes, warnings);
        if let Some(info) = info {
            self.infos.insert(key.clone(), info);
        }
    }
}

/// The node's primary addresses as upstream picks them (`GetNodeHostIPs`): of each family, the
/// first `InternalIP`, or failing that the first `ExternalIP`. Unparsable addresses are passed over.
fn primary_ips(node: &Node) -> Vec<IpAddr> {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref()).map(Vec::as_slice).unwrap_or_default();
    let of_type = |t: &'static str| {
        addresses.iter().filter(move |a| a.type_ == t).filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
    };
    let mut primary: Vec<IpAddr> = Vec::new();
    for ip in of_type("InternalIP").chain(of_type("ExternalIP")) {
        if !primary.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
            primary.push(ip);
        }
    }
    primary
}
