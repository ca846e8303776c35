//! The deployment manifests parse as the Kubernetes types they claim to be and wire the daemon
//! up as documented (config file path, health ports, node name, permissions). Host test.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

fn documents(file: &str) -> Vec<Value> {
    let path = format!("{}/../manifests/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = Vec::new();
    sources::yaml::each_document(
        &text,
        |_, d: Value| {
            docs.push(d);
            Ok::<(), String>(())
        },
        |i, e| format!("{file}: document {i}: {e}"),
    )
    .unwrap();
    docs
}

fn one<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let docs = documents(file);
    let doc = docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind} in {file}"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind} in {file}: {e}"))
}

#[test]
fn the_daemonset_runs_the_daemon_as_documented() {
    let ds: DaemonSet = one("daemonset.yaml", "DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some("kube-ipvs-proxy"));
    assert!(pod.tolerations.unwrap().iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--hostname-override=$(NODE_NAME)".to_string()));
    let env = container.env.clone().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    // Least privilege: the daemon has NET_ADMIN alone and a read-only root; the node's
    // settings under /proc/sys (read-only unless privileged) are written by a privileged init
    // container running `node-settings` with the daemon's own configuration.
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let init = pod.init_containers.as_ref().and_then(|c| c.first()).expect("the node-settings init container");
    assert_eq!(init.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    assert_eq!((&init.image, &init.command), (&container.image, &container.command), "the same binary");
    let init_args = init.args.clone().unwrap();
    assert_eq!(init_args[0], "node-settings");
    assert_eq!(init_args[1..], args[1..], "the daemon's own configuration");

    // (probe, path) on the healthz port 10256.
    for (probe, path) in [(&container.liveness_probe, "/livez"), (&container.readiness_probe, "/healthz")] {
        let http = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(http.path.as_deref(), Some(path));
        assert_eq!(http.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(10256));
    }

    // --config names a file inside the ConfigMap's mount, under the key the ConfigMap has.
    let config = args.iter().find_map(|a| a.strip_prefix("--config=")).unwrap();
    let mounts = container.volume_mounts.clone().unwrap();
    let mount = mounts.iter().find(|m| config.starts_with(&format!("{}/", m.mount_path))).unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
    let configmap_name = volume.config_map.unwrap().name;
    let cm: ConfigMap = one("configmap.yaml", "ConfigMap");
    assert_eq!(cm.metadata.name, Some(configmap_name));
    let key = config.rsplit('/').next().unwrap();
    assert!(cm.data.unwrap().contains_key(key), "the ConfigMap has no key {key}");
    assert!(!mounts.iter().any(|m| m.mount_path == "/lib/modules"), "the kernel loads modules on request");
    // The ownership record lives on the host's /run (the daemon's default --state-dir), so that
    // a restarted pod still knows its NodePorts and a reboot forgets them with the IPVS table.
    let state = mounts.iter().find(|m| m.mount_path == "/run/kube-ipvs-proxy").expect("a /run/kube-ipvs-proxy mount");
    assert_ne!(state.read_only, Some(true));
    let volumes = ds_volumes();
    let host = volumes.iter().find(|v| v.name == state.name).and_then(|v| v.host_path.as_ref()).unwrap();
    assert_eq!((host.path.as_str(), host.type_.as_deref()), ("/run/kube-ipvs-proxy", Some("DirectoryOrCreate")));
}

/// The DaemonSet's pod volumes.
fn ds_volumes() -> Vec<k8s_openapi::api::core::v1::Volume> {
    let ds: DaemonSet = one("daemonset.yaml", "DaemonSet");
    ds.spec.unwrap().template.spec.unwrap().volumes.unwrap()
}

/// Issue 8, bootstrap: nothing the daemon needs before its first sync goes through a ClusterIP
/// or cluster DNS. The configuration names a kubeconfig in the same ConfigMap whose server is
/// the control-plane endpoint (not the in-cluster `kubernetes` Service), authenticated by the
/// pod's service account files; the pod keeps the node's DNS.
#[test]
fn the_daemon_reaches_the_api_server_without_a_cluster_ip_or_cluster_dns() {
    let cm: ConfigMap = one("configmap.yaml", "ConfigMap");
    let data = cm.data.unwrap();
    let config: Value = serde_saphyr::from_str_with_options(&data["config.conf"], sources::yaml::options()).unwrap();
    let kubeconfig_path = config["clientConnection"]["kubeconfig"].as_str().unwrap();
    let ds: DaemonSet = one("daemonset.yaml", "DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let mount = mounts.iter().find(|m| kubeconfig_path.starts_with(&format!("{}/", m.mount_path))).unwrap();
    let key = kubeconfig_path.strip_prefix(&format!("{}/", mount.mount_path)).unwrap();
    let kubeconfig: Value = serde_saphyr::from_str_with_options(&data[key], sources::yaml::options()).unwrap();
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().unwrap();
    assert!(!server.contains("kubernetes.default") && !server.contains("10.96.0.1"), "{server}");
    assert_eq!(server, "https://CONTROL_PLANE_ENDPOINT:6443", "a placeholder the README tells to set");
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(cluster["certificate-authority"], format!("{sa}/ca.crt"));
    assert_eq!(kubeconfig["users"][0]["user"]["tokenFile"], format!("{sa}/token"));
    assert_ne!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"), "cluster DNS needs a ClusterIP");
}

#[test]
fn the_configmap_holds_an_ipvs_kube_proxy_configuration() {
    let cm: ConfigMap = one("configmap.yaml", "ConfigMap");
    let text = cm.data.unwrap().remove("config.conf").unwrap();
    let config: Value = serde_saphyr::from_str_with_options(&text, sources::yaml::options()).unwrap();
    let cases = [
        ("apiVersion", "kubeproxy.config.k8s.io/v1alpha1"),
        ("kind", "KubeProxyConfiguration"),
        ("mode", "ipvs"),
        ("healthzBindAddress", "0.0.0.0:10256"),
    ];
    for (field, want) in cases {
        assert_eq!(config[field].as_str(), Some(want), "{field}");
    }
    assert_eq!(config["ipvs"]["scheduler"].as_str(), Some("rr"));
    assert!(config["ipvs"]["syncPeriod"].as_str().is_some());
}

#[test]
fn rbac_grants_reads_of_what_the_daemon_watches_and_nothing_else() {
    let role: ClusterRole = one("rbac.yaml", "ClusterRole");
    let mut granted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rule in role.rules.unwrap() {
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                granted.entry((group.clone(), resource)).or_default().extend(rule.verbs.iter().cloned());
            }
        }
    }
    // Exactly these: the daemon only lists and watches (no get), and writes no object (no
    // Events either); the fake API server enforces this file in every daemon VM test.
    let cases: &[(&str, &str, &[&str])] = &[
        ("", "services", &["list", "watch"]),
        ("", "nodes", &["list", "watch"]),
        ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ];
    let wanted: BTreeMap<(String, String), Vec<String>> = cases
        .iter()
        .map(|(g, r, verbs)| ((g.to_string(), r.to_string()), verbs.iter().map(|v| v.to_string()).collect()))
        .collect();
    assert_eq!(granted, wanted, "granted (group, resource) -> verbs");
    let sa: ServiceAccount = one("rbac.yaml", "ServiceAccount");
    let binding: ClusterRoleBinding = one("rbac.yaml", "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, "kube-ipvs-proxy");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!((Some(subject.name.clone()), subject.namespace.clone()), (sa.metadata.name, sa.metadata.namespace));
}
