//! The part of `KubeProxyConfiguration` an IPVS proxy uses, as serde types. A field of the wrong
//! type fails the whole file (the caller names its path); a field not here is left to the
//! caller's report of ignored fields. Upstream writes every field it knows, unset ones as zero
//! values (`""`, `0s`, `null`), so each is optional and a zero value means "not set".

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::parse_duration;
use super::file::{FileConfig, FileConntrack};
use super::{ConfigError, IpNet, parse_cidrs, parse_node_port_addresses};

/// The document's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Document {
    // Checked by the caller before the typed read; here so that they are not "ignored".
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    mode: Option<String>,
    client_connection: Option<ClientConnection>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    masquerade_all: Option<bool>,
    node_port_addresses: Option<Vec<String>>,
    /// Newer files carry the sync periods at the top level; `ipvs.*` wins when both are set.
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    iptables: Option<Iptables>,
    ipvs: Option<Ipvs>,
    conntrack: Option<Conntrack>,
    detect_local_mode: Option<String>,
    detect_local: Option<DetectLocal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientConnection {
    kubeconfig: Option<String>,
}

/// IPVS mode's mark bit, and the `masqueradeAll` it read before that moved to the top level.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Iptables {
    masquerade_all: Option<bool>,
    masquerade_bit: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ipvs {
    scheduler: Option<String>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    strict_arp: Option<bool>,
    tcp_timeout: Option<String>,
    tcp_fin_timeout: Option<String>,
    udp_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conntrack {
    max_per_core: Option<u32>,
    min: Option<u32>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
    tcp_be_liberal: Option<bool>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DetectLocal {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
}

/// A string field: blank is unset.
fn text(value: Option<String>) -> Option<String> {
    value.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A duration field (`path` names it in errors): blank or zero is unset.
fn duration(value: Option<String>, path: &str) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = text(value) else { return Ok(None) };
    let d = parse_duration(&text).map_err(|e| ConfigError::field(path, &e.to_string()))?;
    Ok((!d.is_zero()).then_some(d))
}

/// A list field: empty is unset.
fn list(value: Option<Vec<String>>) -> Option<Vec<String>> {
    value.filter(|l| !l.is_empty())
}

impl Document {
    /// The settings the document holds, with the paths of the set fields it ignores.
    pub(super) fn into_file_config(self, ignored: Vec<String>) -> Result<FileConfig, ConfigError> {
        let ipvs = self.ipvs.unwrap_or_default();
        let iptables = self.iptables.unwrap_or_default();
        let conntrack = self.conntrack.unwrap_or_default();
        let detect = self.detect_local.unwrap_or_default();
        let sync_period = duration(ipvs.sync_period, "ipvs.syncPeriod")?.or(duration(self.sync_period, "syncPeriod")?);
        let min_sync_period =
            duration(ipvs.min_sync_period, "ipvs.minSyncPeriod")?.or(duration(self.min_sync_period, "minSyncPeriod")?);
        let masquerade_all = match (self.masquerade_all, iptables.masquerade_all) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
        };
        // Upstream's field is a pointer, so an explicit 0 is bit 0.
        if let Some(bit) = iptables.masquerade_bit.filter(|b| *b > 31) {
            return Err(ConfigError::field(
                "iptables.masqueradeBit",
                &format!("{bit}: expected a bit number from 0 to 31"),
            ));
        }
        Ok(FileConfig {
            mode: text(self.mode),
            kubeconfig: text(self.client_connection.and_then(|c| c.kubeconfig)).map(PathBuf::from),
            hostname_override: text(self.hostname_override),
            bind_address: text(self.bind_address)
                .map(|s| s.parse().map_err(|_| ConfigError::field("bindAddress", "not an IP address")))
                .transpose()?,
            healthz_bind_address: text(self.healthz_bind_address),
            metrics_bind_address: text(self.metrics_bind_address),
            cluster_cidrs: text(self.cluster_cidr).map(|s| parse_cidrs(&s)).transpose()?,
            masquerade_all,
            masquerade_bit: iptables.masquerade_bit,
            node_port_addresses: list(self.node_port_addresses).map(|l| parse_node_port_addresses(&l)).transpose()?,
            scheduler: text(ipvs.scheduler),
            sync_period,
            min_sync_period,
            exclude_cidrs: list(ipvs.exclude_cidrs)
                .map(|l| l.iter().map(|s| model::parse_prefix(s)).collect::<Result<Vec<IpNet>, _>>())
                .transpose()?,
            strict_arp: ipvs.strict_arp,
            tcp_timeout: duration(ipvs.tcp_timeout, "ipvs.tcpTimeout")?,
            tcp_fin_timeout: duration(ipvs.tcp_fin_timeout, "ipvs.tcpFinTimeout")?,
            udp_timeout: duration(ipvs.udp_timeout, "ipvs.udpTimeout")?,
            detect_local_mode: text(self.detect_local_mode),
            bridge_interface: text(detect.bridge_interface),
            interface_name_prefix: text(detect.interface_name_prefix),
            conntrack: FileConntrack {
                max_per_core: conntrack.max_per_core,
                min: conntrack.min,
                tcp_established: duration(conntrack.tcp_established_timeout, "conntrack.tcpEstablishedTimeout")?,
                tcp_close_wait: duration(conntrack.tcp_close_wait_timeout, "conntrack.tcpCloseWaitTimeout")?,
                tcp_be_liberal: conntrack.tcp_be_liberal,
                udp: duration(conntrack.udp_timeout, "conntrack.udpTimeout")?,
                udp_stream: duration(conntrack.udp_stream_timeout, "conntrack.udpStreamTimeout")?,
            },
            ignored,
        })
    }
}
