//! Service objects checked and reduced to what the desired state needs.

use std::net::IpAddr;

use ipvs::{Family, Protocol, Scheduler};
use k8s_openapi::api::core::v1::Service;

use ipnet::IpNet;

use crate::config::{Config, SCHEDULER_ANNOTATION, is_known_scheduler};
use crate::names::ServiceKey;
use crate::prefix::parse_prefix;
use crate::warning::Warning;

/// Label that hands a Service to another proxy (upstream skips such Services).
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;
/// Upstream's largest allowed affinity timeout (one day).
const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// The addresses of one family of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyAddresses {
    pub family: Family,
    pub cluster_ip: IpAddr,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePortSpec {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Set only for NodePort and LoadBalancer Services that allocated one.
    pub node_port: Option<u16>,
}

/// A valid Service the proxy handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceSpec {
    pub key: ServiceKey,
    /// One entry per family, each family at most once.
    pub families: Vec<FamilyAddresses>,
    pub ports: Vec<ServicePortSpec>,
    pub scheduler: Scheduler,
    /// Persistence timeout in seconds for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    pub health_check_node_port: Option<u16>,
    pub source_ranges: Vec<IpNet>,
}

impl ServiceSpec {
    /// Whether its virtual servers depend on the node's addresses (NodePorts; externalIPs and
    /// LoadBalancer IPs, which are not bound when they are node addresses).
    pub fn depends_on_node_addresses(&self) -> bool {
        self.ports.iter().any(|p| p.node_port.is_some())
            || self.families.iter().any(|f| !f.load_balancer_ips.is_empty() || !f.external_ips.is_empty())
    }
}

/// What became of a Service object.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The proxy handles it.
    Handled(ServiceSpec),
    /// Not the proxy's (headless, ExternalName, another proxy's) or malformed: treated as absent.
    Ignored,
}

/// Checks `svc`; warnings name it. Malformed Services are [`Parsed::Ignored`] with a warning.
pub(crate) fn parse_service(svc: &Service, config: &Config, warnings: &mut Vec<Warning>) -> Parsed {
    let key = ServiceKey::new(
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default(),
    );
    match check(svc, &key, config, warnings) {
        Ok(parsed) => parsed,
        Err(reason) => {
            warnings.push(Warning::new(object(&key), format!("{reason}; Service skipped")));
            Parsed::Ignored
        }
    }
}

fn check(svc: &Service, key: &ServiceKey, config: &Config, warnings: &mut Vec<Warning>) -> Result<Parsed, String> {
    if key.name().is_empty() {
        return Err("no metadata.name".into());
    }
    if svc.metadata.labels.as_ref().is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return Ok(Parsed::Ignored);
    }
    let Some(spec) = &svc.spec else { return Err("no spec".into()) };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let node_ports = match type_ {
        "ExternalName" => return Ok(Parsed::Ignored),
        "ClusterIP" => false,
        "NodePort" | "LoadBalancer" => true,
        other => return Err(format!("unknown type {other:?}")),
    };
    let cluster_ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.as_str()],
        _ => return Err("no clusterIP allocated".into()),
    };
    if cluster_ips.contains(&"None") {
        return Ok(Parsed::Ignored);
    }
    let mut families: Vec<FamilyAddresses> = Vec::new();
    for (i, text) in cluster_ips.iter().enumerate() {
        let ip: IpAddr = text.parse().map_err(|_| format!("clusterIP {text:?} is not an IP address"))?;
        let family = Family::of(&ip);
        if let Some(declared) = spec.ip_families.as_ref().and_then(|f| f.get(i))
            && family_name(family) != declared
        {
            return Err(format!("clusterIP {ip} is {} but ipFamilies[{i}] is {declared}", family_name(family)));
        }
        if families.iter().any(|f| f.family == family) {
            return Err(format!("two {} clusterIPs", family_name(family)));
        }
        families.push(FamilyAddresses { family, cluster_ip: ip, external_ips: vec![], load_balancer_ips: vec![] });
    }

    // An entry that cannot be read is skipped, not the Service (upstream does the same).
    for text in spec.external_ips.iter().flatten() {
        let Ok(ip) = text.trim().parse::<IpAddr>() else {
            warnings.push(Warning::new(object(key), format!("externalIP {text:?} is not an IP address; ignored")));
            continue;
        };
        add_address(&mut families, ip, "externalIP", key, warnings, |f| &mut f.external_ips);
    }
    if type_ == "LoadBalancer" {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        for entry in ingress.into_iter().flatten() {
            let Some(text) = entry.ip.as_deref().filter(|t| !t.is_empty()) else { continue };
            let Ok(ip) = text.parse::<IpAddr>() else {
                let reason = format!("loadBalancer ingress IP {text:?} is not an IP address; ignored");
                warnings.push(Warning::new(object(key), reason));
                continue;
            };
            // ipMode Proxy: the load balancer proxies to the node, so the VIP must not be local.
            if entry.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            add_address(&mut families, ip, "loadBalancer ingress IP", key, warnings, |f| &mut f.load_balancer_ips);
        }
    }

    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let name = p.name.clone().unwrap_or_default();
        let protocol = parse_protocol(p.protocol.as_deref()).ok_or_else(|| {
            format!("port {i} ({name:?}) has unknown protocol {:?}", p.protocol.as_deref().unwrap_or(""))
        })?;
        let port = port_number(p.port).ok_or_else(|| format!("port {i} ({name:?}) has invalid port {}", p.port))?;
        let node_port = match p.node_port {
            Some(n) if node_ports && n != 0 => {
                Some(port_number(n).ok_or_else(|| format!("port {i} ({name:?}) has invalid nodePort {n}"))?)
            }
            _ => None,
        };
        if ports.iter().any(|q: &ServicePortSpec| q.name == name) {
            return Err(format!("two ports named {name:?}"));
        }
        if ports.iter().any(|q: &ServicePortSpec| q.protocol == protocol && q.port == port) {
            return Err(format!("two ports {protocol} {port}"));
        }
        ports.push(ServicePortSpec { name, protocol, port, node_port });
    }

    let scheduler = match svc.metadata.annotations.as_ref().and_then(|a| a.get(SCHEDULER_ANNOTATION)) {
        Some(s) if is_known_scheduler(s.trim()) => Scheduler::new(s.trim()),
        Some(s) => {
            warnings.push(Warning::new(
                object(key),
                format!(
                    "annotation {SCHEDULER_ANNOTATION}: unknown scheduler {s:?} ignored, using {:?}",
                    config.default_scheduler
                ),
            ));
            Scheduler::new(&config.default_scheduler)
        }
        None => Scheduler::new(&config.default_scheduler),
    };

    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
        if !(1..=MAX_AFFINITY_TIMEOUT).contains(&t) {
            return Err(format!("sessionAffinity timeout {t} is not within 1..={MAX_AFFINITY_TIMEOUT}"));
        }
        Some(t.unsigned_abs())
    } else {
        None
    };

    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = match spec.health_check_node_port {
        Some(n) if type_ == "LoadBalancer" && external_local && n != 0 => {
            Some(port_number(n).ok_or_else(|| format!("invalid healthCheckNodePort {n}"))?)
        }
        _ => None,
    };
    let mut source_ranges = Vec::new();
    for text in spec.load_balancer_source_ranges.iter().flatten() {
        match parse_prefix(text) {
            Ok(cidr) => source_ranges.push(cidr),
            Err(e) => warnings.push(Warning::new(object(key), format!("loadBalancerSourceRanges: {e}; ignored"))),
        }
    }

    // Upstream applies source ranges per family: a family without one is not restricted.
    if type_ == "LoadBalancer" && !source_ranges.is_empty() {
        for fam in &families {
            let of_family =
                |p: &IpNet| matches!((p, fam.family), (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6));
            if !source_ranges.iter().any(of_family) {
                let name = family_name(fam.family);
                warnings.push(Warning::new(
                    object(key),
                    format!("loadBalancerSourceRanges has no {name} range: {name} traffic is not restricted"),
                ));
            }
        }
    }
    Ok(Parsed::Handled(ServiceSpec {
        key: key.clone(),
        families,
        ports,
        scheduler,
        affinity_timeout,
        external_local,
        internal_local,
        health_check_node_port,
        source_ranges,
    }))
}

/// Adds `ip` to the list `field` picks in its family, once; an address of a family the Service
/// lacks is ignored with a warning, as each family is proxied on its own.
fn add_address(
    families: &mut [FamilyAddresses],
    ip: IpAddr,
    what: &str,
    key: &ServiceKey,
    warnings: &mut Vec<Warning>,
    field: impl Fn(&mut FamilyAddresses) -> &mut Vec<IpAddr>,
) {
    match families.iter_mut().find(|f| f.family == Family::of(&ip)) {
        Some(f) => {
            let list = field(f);
            if !list.contains(&ip) {
                list.push(ip);
            }
        }
        None => warnings.push(Warning::new(
            object(key),
            format!("{what} {ip} ignored: the Service has no {} clusterIP", family_name(Family::of(&ip))),
        )),
    }
}

/// How warnings name a Service (built only when there is something to say).
fn object(key: &ServiceKey) -> String {
    format!("Service {key}")
}

/// A protocol name as Services and EndpointSlices spell it; absent means TCP.
pub(crate) fn parse_protocol(text: Option<&str>) -> Option<Protocol> {
    match text {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(_) => None,
    }
}

/// A port number in 1..=65535.
pub(crate) fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The Kubernetes name of a family (`IPv4`, `IPv6`).
pub(crate) fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}
