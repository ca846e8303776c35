//! A new node (issue 8, item 3): an empty IPVS table, no kube-ipvs0, and the API server
//! reachable only at the control-plane address, over TLS with a service account token, as
//! kubeadm's kube-proxy kubeconfig names them. Nothing the daemon needs before its first sync
//! may go through a ClusterIP (the `kubernetes` Service is routed only once a proxy programs
//! it) or cluster DNS.

mod daemon_support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use daemon_support::*;
use integration::fake_api::TlsIdentity;
use integration::{Backend, in_netns, ip};

const CONTROL_PLANE: &str = "192.168.200.1";

/// The cluster's own `kubernetes` Service (10.96.0.1:443) and its slice, the API server.
fn kubernetes_service() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: kubernetes\n  namespace: default\nspec:\n  type: ClusterIP\n\
         \x20 clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.1]\n  ipFamilies: [IPv4]\n  ports:\n\
         \x20 - name: https\n    port: 443\n    targetPort: 6443\n    protocol: TCP\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kubernetes\n  namespace: default\n\
         \x20 labels:\n    kubernetes.io/service-name: kubernetes\naddressType: IPv4\nports:\n\
         - name: https\n  port: 6443\n  protocol: TCP\nendpoints:\n- addresses: [\"{CONTROL_PLANE}\"]\n  conditions: {{ready: true}}\n"
    )
}

fn connects(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_new_node_reaches_the_control_plane_directly_and_programs_everything() {
    in_netns(|| async {
        node_link();
        // The control plane, as another machine would be: reachable at its own address only.
        ip(&["link", "add", "cp0", "type", "dummy"]).unwrap();
        ip(&["addr", "add", &format!("{CONTROL_PLANE}/32"), "dev", "cp0"]).unwrap();
        ip(&["link", "set", "cp0", "up"]).unwrap();
        let b1 = Backend::start("b1", 1, 8080).unwrap();
        let identity = TlsIdentity::new(CONTROL_PLANE.parse().unwrap(), "kube-proxy-service-account-token").unwrap();
        let cluster = Cluster::start_at(format!("{CONTROL_PLANE}:6443").parse().unwrap(), Some(identity));
        cluster.apply(&kubernetes_service());
        cluster.apply(&service_yaml("web", "10.96.0.10", Some(30080)));
        cluster.apply(&slice_yaml("web", &[&b1]));

        // A new node: nothing programmed, and the API server's ClusterIP leads nowhere.
        assert!(ipvs_table().is_empty(), "{:?}", ipvs_table());
        assert!(ip(&["link", "show", "kube-ipvs0"]).is_err(), "no kube-ipvs0 yet");
        assert!(!connects("10.96.0.1:443"), "the kubernetes Service is not routed before a proxy runs");

        let daemon = Daemon::start(&cluster);
        for vs in ["TCP  10.96.0.1:443", "TCP  10.96.0.10:80", &format!("TCP  {NODE_IP}:30080")] {
            eventually(&format!("{vs} programmed"), PATIENCE, || serving_reals(vs).filter(|r| !r.is_empty()))
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("{vs}; daemon log:\n{}", daemon.log()));
        }
        daemon.wait_ready();
        assert!(connects("10.96.0.1:443"), "the API server through its ClusterIP");
        assert_eq!(ask_many("10.96.0.10:80", 2), ["b1", "b1"]);
        eventually("/healthz 200", PATIENCE, || (daemon.healthz_status() == 200).then_some(()));
    });
}
