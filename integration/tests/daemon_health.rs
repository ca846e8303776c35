//! The real daemon's health-check node port server for a LoadBalancer Service with
//! `externalTrafficPolicy: Local`, on the VM kernel: it answers as upstream's does (200 with
//! local endpoints, else 503; their count in JSON) on the node's address, following the
//! EndpointSlice, and goes away with the Service.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use integration::fake_api::Kind;
use integration::{Backend, in_netns, run};

const PATIENCE: Duration = Duration::from_secs(30);
const HEALTH_PORT: u16 = 32100;

fn lb_service() -> String {
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: default\nspec:\n  type: LoadBalancer\n\
     \x20 clusterIP: 10.96.0.20\n  clusterIPs: [10.96.0.20]\n  ipFamilies: [IPv4]\n\
     \x20 externalTrafficPolicy: Local\n  healthCheckNodePort: 32100\n  ports:\n\
     \x20 - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: 30080\n    protocol: TCP\n"
        .to_string()
}

/// The slice of `lb`: `local` endpoints on this node, `remote` addresses on node-b.
fn slice(local: &[&Backend], remote: &[&str]) -> String {
    let mut endpoints = String::new();
    let on = |addr: &str, node: &str| {
        format!(
            "- addresses: [\"{addr}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n\
             \x20 nodeName: {node}\n"
        )
    };
    for b in local {
        endpoints.push_str(&on(&b.addr_v4().to_string(), NODE));
    }
    for addr in remote {
        endpoints.push_str(&on(addr, "node-b"));
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: lb-slice\n  namespace: default\n\
         \x20 labels:\n    kubernetes.io/service-name: lb\naddressType: IPv4\nports:\n\
         - name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n{endpoints}"
    )
}

/// `GET url`: (status, JSON body), or None when nothing answers.
fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    let out = run("curl", &["-sS", "--max-time", "2", "-w", "\n%{http_code}", url], None).ok()?;
    let (body, status) = out.trim_end().rsplit_once('\n')?;
    Some((status.parse().ok()?, serde_json::from_str(body).ok()?))
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_health_check_node_port_follows_the_local_endpoints() {
    in_netns(|| async {
        node_link();
        let b: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("b{i}"), i, 8080).unwrap()).collect();
        let cluster = Cluster::start();
        cluster.apply(&lb_service());
        cluster.apply(&slice(&[&b[0]], &[]));
        let _daemon = Daemon::start(&cluster);
        let url = format!("http://{NODE_IP}:{HEALTH_PORT}/");

        // (local endpoints, remote endpoints, status, localEndpoints)
        let steps: [(&[&Backend], &[&str], u16, u64); 3] =
            [(&[&b[0]], &[], 200, 1), (&[&b[0], &b[1]], &["10.244.9.2"], 200, 2), (&[], &["10.244.9.2"], 503, 0)];
        for (i, (local, remote, status, count)) in steps.into_iter().enumerate() {
            cluster.apply(&slice(local, remote));
            let (_, body) = eventually(&format!("step {i}: {status} with {count} local"), PATIENCE, || {
                get(&url).filter(|(s, body)| *s == status && body["localEndpoints"] == count)
            });
            assert_eq!(body["service"]["namespace"], "default", "step {i}");
            assert_eq!(body["service"]["name"], "lb", "step {i}");
            assert_eq!(body["serviceProxyHealthy"], true, "step {i}");
        }

        cluster.delete(Kind::Service, "default", "lb");
        eventually("the health-check port closed with the Service", PATIENCE, || get(&url).is_none().then_some(()));
    });
}

/// With `--nodeport-addresses`, the server listens only on the node's addresses inside it, as
/// upstream's does; without, on every address.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_health_check_node_port_listens_where_node_port_addresses_say() {
    in_netns(|| async {
        node_link();
        let b1 = Backend::start("b1", 1, 8080).unwrap();
        let cluster = Cluster::start();
        cluster.apply(&lb_service());
        cluster.apply(&slice(&[&b1], &[]));
        let flags = |extra: &[&str]| -> Vec<String> {
            ["--sync-period=2s", "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let at = |addr: &str| format!("http://{addr}:{HEALTH_PORT}/");
        // (extra flags, address that answers, address that does not)
        let cases: [(&[&str], &str, Option<&str>); 2] =
            [(&[], "127.0.0.1", None), (&["--nodeport-addresses=192.168.100.0/24"], NODE_IP, Some("127.0.0.1"))];
        for (extra, answering, silent) in cases {
            let daemon = Daemon::start_with_flags(&cluster, &flags(extra));
            eventually(&format!("{extra:?}: {answering} answers"), PATIENCE, || {
                get(&at(answering)).filter(|(s, _)| *s == 200)
            });
            if let Some(silent) = silent {
                assert!(get(&at(silent)).is_none(), "{extra:?}: {silent} answers too");
            }
            drop(daemon);
            eventually(&format!("{extra:?}: the daemon gone"), PATIENCE, || {
                get(&at(answering)).is_none().then_some(())
            });
        }
    });
}
