//! kube-proxy's `KubeProxyConfiguration` file (`kubeproxy.config.k8s.io/v1alpha1`), read into a
//! typed document (`super::document`): the fields that apply to an IPVS proxy are taken, a field
//! of the wrong type is an error naming its path, and every other field that is set is reported
//! as ignored (`serde_ignored`), so an operator can point `--config` at the file their kube-proxy
//! ConfigMap holds.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::document::Document;
use super::{ConfigError, IpNet, NodePortAddress};

/// The API group/version this reader understands.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";

/// What a configuration file sets. `None` (or empty) means "not set": the flag or the default
/// applies.
/// The `conntrack` section: unset (or zero) fields take upstream's defaults later.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConntrack {
    /// `conntrack.maxPerCore`.
    pub max_per_core: Option<u32>,
    /// `conntrack.min`.
    pub min: Option<u32>,
    /// `conntrack.tcpEstablishedTimeout`.
    pub tcp_established: Option<Duration>,
    /// `conntrack.tcpCloseWaitTimeout`.
    pub tcp_close_wait: Option<Duration>,
    /// `conntrack.tcpBeLiberal`.
    pub tcp_be_liberal: Option<bool>,
    /// `conntrack.udpTimeout`.
    pub udp: Option<Duration>,
    /// `conntrack.udpStreamTimeout`.
    pub udp_stream: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    /// `mode`, when set (anything but `ipvs` is warned about by the caller).
    pub mode: Option<String>,
    /// `clientConnection.kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `hostnameOverride`.
    pub hostname_override: Option<String>,
    /// `bindAddress`.
    pub bind_address: Option<IpAddr>,
    /// `healthzBindAddress`, unparsed (`host:port` or a bare IP).
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`, unparsed.
    pub metrics_bind_address: Option<String>,
    /// `clusterCIDR` (comma-separated for dual-stack).
    pub cluster_cidrs: Option<Vec<IpNet>>,
    /// `masqueradeAll` or the older `iptables.masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// `iptables.masqueradeBit` (0 to 31).
    pub masquerade_bit: Option<u8>,
    /// `nodePortAddresses`.
    pub node_port_addresses: Option<Vec<NodePortAddress>>,
    /// `ipvs.scheduler`.
    pub scheduler: Option<String>,
    /// `ipvs.syncPeriod`, else `syncPeriod`.
    pub sync_period: Option<Duration>,
    /// `ipvs.minSyncPeriod`, else `minSyncPeriod`.
    pub min_sync_period: Option<Duration>,
    /// `ipvs.excludeCIDRs`.
    pub exclude_cidrs: Option<Vec<IpNet>>,
    /// `ipvs.strictARP`.
    pub strict_arp: Option<bool>,
    /// `ipvs.tcpTimeout`.
    pub tcp_timeout: Option<Duration>,
    /// `ipvs.tcpFinTimeout`.
    pub tcp_fin_timeout: Option<Duration>,
    /// `ipvs.udpTimeout`.
    pub udp_timeout: Option<Duration>,
    /// The `conntrack` section.
    pub conntrack: FileConntrack,
    /// `detectLocalMode`.
    pub detect_local_mode: Option<String>,
    /// `detectLocal.bridgeInterface`.
    pub bridge_interface: Option<String>,
    /// `detectLocal.interfaceNamePrefix`.
    pub interface_name_prefix: Option<String>,
    /// Dotted paths of fields that are set to something but that this proxy does not use.
    pub ignored: Vec<String>,
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
        FileConfig::parse(&text).map_err(|e| ConfigError::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// Parses a `KubeProxyConfiguration` document. A whole kube-proxy `ConfigMap` is accepted too:
    /// its `data["config.conf"]` is read, so an operator can use `kubectl get cm -o yaml` output.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let doc: Value = serde_saphyr::from_str_with_options(text, sources::yaml::options())
            .map_err(|e| ConfigError::Yaml(e.to_string()))?;
        if lookup(&doc, "kind").and_then(Value::as_str) == Some("ConfigMap") {
            let inner = lookup(&doc, "data")
                .and_then(|d| d.get("config.conf"))
                .and_then(Value::as_str)
                .ok_or_else(|| ConfigError::field("data", "a kube-proxy ConfigMap needs data[\"config.conf\"]"))?;
            return FileConfig::parse(inner);
        }
        match (lookup(&doc, "apiVersion").and_then(Value::as_str), lookup(&doc, "kind").and_then(Value::as_str)) {
            (Some(API_VERSION), Some("KubeProxyConfiguration")) => {}
            (api, kind) => {
                return Err(ConfigError::field(
                    "apiVersion/kind",
                    &format!(
                        "expected {API_VERSION} KubeProxyConfiguration, found {} {}",
                        api.unwrap_or("(none)"),
                        kind.unwrap_or("(none)")
                    ),
                ));
            }
        }

        // Fields of the wrong type are errors naming their path; fields the document does not
        // have are collected, and reported when set to something (upstream writes zero values
        // for every field it knows).
        let mut unknown = Vec::new();
        let typed: Document = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            &doc,
            &mut |path: serde_ignored::Path| {
                // An optional section shows as a `?` step: `ipvs.?.syncPerod`.
                let steps: Vec<String> =
                    path.to_string().split('.').filter(|s| *s != "?").map(str::to_string).collect();
                unknown.push(steps.join("."))
            },
        ))
        .map_err(|e| ConfigError::field(&e.path().to_string(), &e.inner().to_string()))?;
        let mut ignored = Vec::new();
        for path in unknown {
            if let Some(value) = lookup(&doc, &path) {
                collect_set(value, &path, &mut ignored);
            }
        }
        typed.into_file_config(ignored)
    }
}

/// The value at a dotted path, if every step is a mapping key.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, key| v.get(key))
}

/// Whether a value counts as "set": upstream serialises unset fields as zero values.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !(s.is_empty() || s == "0" || s == "0s"),
        Value::Array(seq) => !seq.is_empty(),
        Value::Object(m) => m.values().any(is_set),
    }
}

/// Records `v` at `path` if it is set; a mapping is walked, so that each set leaf is named.
fn collect_set(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                collect_set(value, &format!("{path}.{key}"), out);
            }
        }
        v if is_set(v) => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubeadm init` writes into the kube-proxy ConfigMap (Kubernetes 1.33), switched to
    /// IPVS with a few fields set.
    /// What kubeadm writes in its kube-proxy ConfigMap (`config.conf`), with mode ipvs.
    const KUBEADM_CONFIG: &str = include_str!("../../tests/fixtures/kubeadm-config.conf");

    #[test]
    fn reads_a_kubeadm_configmap_payload() {
        let cfg = FileConfig::parse(KUBEADM_CONFIG).unwrap();
        assert_eq!(cfg.mode.as_deref(), Some("ipvs"));
        assert_eq!(cfg.kubeconfig, Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf")));
        assert_eq!(cfg.hostname_override, None);
        assert_eq!(cfg.bind_address, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(cfg.healthz_bind_address, None, "empty means default");
        assert_eq!(cfg.metrics_bind_address.as_deref(), Some("0.0.0.0:10249"));
        assert_eq!(cfg.cluster_cidrs.as_ref().map(Vec::len), Some(2));
        assert_eq!(cfg.masquerade_all, Some(false));
        assert_eq!(cfg.node_port_addresses, None);
        assert_eq!(cfg.scheduler.as_deref(), Some("wrr"));
        assert_eq!(cfg.sync_period, Some(Duration::from_secs(60)));
        assert_eq!(cfg.min_sync_period, Some(Duration::from_secs(1)));
        assert_eq!(cfg.exclude_cidrs, Some(vec!["192.0.2.0/24".parse().unwrap()]));
        assert_eq!(cfg.strict_arp, Some(true));
        assert_eq!(cfg.tcp_timeout, Some(Duration::from_secs(900)));
        assert_eq!(cfg.tcp_fin_timeout, None, "0s means unset");
        assert_eq!(cfg.udp_timeout, None);
        // Only the set fields this proxy does not use are reported, not every zero value.
        assert_eq!(cfg.ignored, vec!["oomScoreAdj".to_string(), "featureGates.SomeGate".to_string()]);
    }

    #[test]
    fn reads_a_whole_configmap() {
        let indented: String = KUBEADM_CONFIG.lines().map(|l| format!("    {l}\n")).collect();
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-proxy\ndata:\n  config.conf: |\n{indented}"
        );
        assert_eq!(FileConfig::parse(&cm).unwrap(), FileConfig::parse(KUBEADM_CONFIG).unwrap());
    }

    #[test]
    fn field_precedence_and_fallbacks() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        type Check = fn(&FileConfig) -> bool;
        let cases: &[(&str, Check)] = &[
            ("syncPeriod: 10s\n", |c| c.sync_period == Some(Duration::from_secs(10))),
            ("syncPeriod: 10s\nipvs:\n  syncPeriod: 20s\n", |c| c.sync_period == Some(Duration::from_secs(20))),
            ("minSyncPeriod: 250ms\n", |c| c.min_sync_period == Some(Duration::from_millis(250))),
            ("iptables:\n  masqueradeAll: true\n", |c| c.masquerade_all == Some(true)),
            ("masqueradeAll: true\n", |c| c.masquerade_all == Some(true)),
            ("nodePortAddresses: [primary]\n", |c| c.node_port_addresses == Some(vec![NodePortAddress::Primary])),
            ("nodePortAddresses: [10.0.0.0/8]\n", |c| {
                c.node_port_addresses == Some(vec![NodePortAddress::Cidr(model::parse_prefix("10.0.0.0/8").unwrap())])
            }),
            ("mode: iptables\n", |c| c.mode.as_deref() == Some("iptables")),
            // Honoured since issue 8, item 5 (conntrack tuning).
            ("conntrack:\n  maxPerCore: 32768\n", |c| c.conntrack.max_per_core == Some(32768) && c.ignored.is_empty()),
        ];
        for (body, check) in cases {
            let cfg = FileConfig::parse(&format!("{head}{body}")).unwrap();
            assert!(check(&cfg), "{body}: {cfg:?}");
        }
    }

    /// A misspelt field is not silently dropped: it is reported with its path, as is a field
    /// of a newer upstream this reader does not know; zero values are not.
    #[test]
    fn unknown_fields_are_reported_by_path() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        let body = "ipvs:\n  syncPerod: 10s\n  scheduler: rr\nwinkernel:\n  enableDSR: false\nfutureSection:\n  a: 1\n  b: \"\"\n";
        let cfg = FileConfig::parse(&format!("{head}{body}")).unwrap();
        assert_eq!(cfg.ignored, ["ipvs.syncPerod", "futureSection.a"]);
        assert_eq!(cfg.scheduler.as_deref(), Some("rr"));
        assert_eq!(cfg.sync_period, None);
    }

    #[test]
    fn bad_files_are_errors_naming_the_field() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        let cases: &[(&str, &str)] = &[
            ("ipvs:\n  syncPeriod: 30\n", "ipvs.syncPeriod"),
            ("ipvs:\n  strictARP: yes-please\n", "ipvs.strictARP"),
            ("clusterCIDR: 10.0.0.0/40\n", "10.0.0.0/40"),
            ("ipvs:\n  excludeCIDRs: 10.0.0.0/8\n", "ipvs.excludeCIDRs"),
            ("bindAddress: localhost\n", "bindAddress"),
            ("iptables:\n  masqueradeBit: 32\n", "iptables.masqueradeBit"),
            ("iptables:\n  masqueradeBit: -1\n", "iptables.masqueradeBit"),
            ("iptables:\n  masqueradeBit: \"14\"\n", "iptables.masqueradeBit"),
            ("nodePortAddresses: [primary, 10.0.0.0/8]\n", "nodePortAddresses"),
            // A section of another type would otherwise make every field in it absent.
            ("ipvs: [1, 2]\n", "ipvs"),
            ("conntrack:\n  maxPerCore: -1\n", "conntrack.maxPerCore"),
            ("clientConnection:\n  kubeconfig: [a]\n", "clientConnection.kubeconfig"),
        ];
        for (body, named) in cases {
            let err = FileConfig::parse(&format!("{head}{body}")).unwrap_err().to_string();
            assert!(err.contains(named), "{body}: {err}");
        }
        for doc in ["kind: KubeProxyConfiguration\n", "apiVersion: v1\nkind: Pod\n", "[1, 2", "kind: ConfigMap\n"] {
            assert!(FileConfig::parse(doc).is_err(), "{doc}");
        }
    }
}
