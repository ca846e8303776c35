//! `debug render`: the IPVS state the proxy would program for a file of Kubernetes objects, in
//! `ipvsadm -Ln` format with each virtual server's Service named, or as JSON. No kernel needed.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use ipvs::{RealServer, RealServerEntry, Stats, Table, VirtualServer, VirtualServerEntry, VirtualServerId};
use k8s_openapi::api::core::v1::Node;
use model::{Config, DesiredState, Masquerade, Model, ServicePortRef, VirtualServerKind, Warning};
use serde::Serialize;
use sources::{Objects, ObjectsError};

use crate::cli::RenderArgs;
use crate::debug::write_addresses;
use ipvs::listing::{self, ListFormat};

/// Why `debug render` could not read its input.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file (`-` for stdin).
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid Kubernetes YAML.
    #[error("{path}: {error}")]
    Objects {
        /// The file (`-` for stdin).
        path: String,
        /// The document and field at fault (part of the message, so not repeated as a cause).
        error: ObjectsError,
    },
}

/// The desired state computed from a file, with what the model had to say about it.
pub struct Rendered {
    /// The desired state.
    pub model: Model,
    /// Objects or fields the model could not use.
    pub warnings: Vec<Warning>,
    /// Documents of other kinds, ignored.
    pub skipped: Vec<String>,
}

/// Reads `args.file` (or stdin for `-`) and computes the desired state for node `args.node_name`.
pub fn compute(args: &RenderArgs) -> Result<Rendered, RenderError> {
    let path = args.file.display().to_string();
    let text = read_input(&args.file).map_err(|source| RenderError::Read { path: path.clone(), source })?;
    let objects = Objects::parse(&text).map_err(|error| RenderError::Objects { path, error })?;
    let node = objects.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(args.node_name.as_str()));
    let mut config = Config::new(args.node_name.clone());
    config.default_scheduler = args.scheduler.clone();
    config.cluster_cidrs = args.cluster_cidrs.clone();
    let (mut model, warnings) = Model::from_objects(config, &objects.services, &objects.endpoint_slices, node);
    let mut addrs =
        if args.node_ips.is_empty() { node.map(internal_ips).unwrap_or_default() } else { args.node_ips.clone() };
    addrs.sort();
    addrs.dedup();
    model.set_node_addresses(addrs);
    Ok(Rendered { model, warnings, skipped: objects.skipped })
}

/// A Node's `InternalIP` addresses: where the daemon would find NodePort addresses on that host.
fn internal_ips(node: &Node) -> Vec<IpAddr> {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    addresses.into_iter().flatten().filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect()
}

fn read_input(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// The desired state as ipvsadm would list it once programmed (counters zero), each virtual
/// server followed by `#  service namespace/name:port (Kind)`, then the addresses to bind.
pub fn listing(desired: &DesiredState, link: &str) -> String {
    let table = Table {
        services: desired
            .virtual_servers()
            .map(|(_, vs)| (entry(&vs.server), vs.real_server_configs().map(|rs| real_entry(&rs)).collect()))
            .collect(),
    };
    let comments = |id: &VirtualServerId| match desired.virtual_server(id) {
        Some(vs) => vec![format!("service {} ({})", vs.origin, kind_name(vs.kind))],
        None => Vec::new(),
    };
    let mut out = listing::listing(&table, None, ListFormat::default(), &comments);
    out.push('\n');
    let addresses: Vec<IpAddr> = desired.addresses().copied().collect();
    write_addresses(&mut out, link, Some(&addresses));
    out
}

fn entry(server: &VirtualServer) -> VirtualServerEntry {
    VirtualServerEntry { server: server.clone(), stats: Stats::default() }
}

fn real_entry(server: &RealServer) -> RealServerEntry {
    RealServerEntry { server: *server, connections: Default::default(), stats: Stats::default() }
}

/// How a Service names the address kind, as `kubectl` users know it.
fn kind_name(kind: VirtualServerKind) -> &'static str {
    match kind {
        VirtualServerKind::ClusterIp => "ClusterIP",
        VirtualServerKind::ExternalIp => "ExternalIP",
        VirtualServerKind::LoadBalancer => "LoadBalancer",
        VirtualServerKind::NodePort => "NodePort",
    }
}

/// The JSON document `debug render --json` prints.
#[derive(Debug, Serialize)]
pub struct RenderJson<'a> {
    /// Virtual servers ordered by id, each with its real servers and origin.
    pub virtual_servers: Vec<VirtualServerJson<'a>>,
    /// Addresses to bind on kube-ipvs0, ordered.
    pub addresses: Vec<IpAddr>,
    /// What the model could not use.
    pub warnings: &'a [Warning],
    /// Documents of other kinds that were ignored.
    pub skipped: &'a [String],
}

/// One desired virtual server. JSON maps need string keys, so real servers are a list here.
#[derive(Debug, Serialize)]
pub struct VirtualServerJson<'a> {
    /// Its configuration.
    pub server: &'a VirtualServer,
    /// Its real servers, ordered by id.
    pub real_servers: Vec<RealServer>,
    /// The Service port it serves.
    pub origin: &'a ServicePortRef,
    /// Which address of the Service it listens on.
    pub kind: VirtualServerKind,
    /// Which of its traffic is masqueraded.
    pub masquerade: Masquerade,
    /// `loadBalancerSourceRanges`.
    pub source_ranges: &'a [IpNet],
    /// Whether its address is bound on kube-ipvs0.
    pub bind: bool,
}

/// The JSON view of `rendered`.
pub fn json(rendered: &Rendered) -> RenderJson<'_> {
    let desired = rendered.model.desired();
    RenderJson {
        virtual_servers: desired
            .virtual_servers()
            .map(|(_, vs)| VirtualServerJson {
                server: &vs.server,
                real_servers: vs.real_server_configs().collect(),
                origin: &vs.origin,
                kind: vs.kind,
                masquerade: vs.masquerade,
                source_ranges: &vs.source_ranges,
                bind: vs.bind,
            })
            .collect(),
        addresses: desired.addresses().copied().collect(),
        warnings: &rendered.warnings,
        skipped: &rendered.skipped,
    }
}
