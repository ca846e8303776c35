//! The real daemon's health-check node port server for a LoadBalancer Service with
//! `externalTrafficPolicy: Local`, on the VM kernel: it answers as upstream's does (200 with
//! local endpoints, else 503; their count in JSON) on the node's address, following the
//! EndpointSlice, and goes away with the Service.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use integration::fake_api::Kind;
use integration::{Backend, in_netns, run};

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

/// The common start: the node link, backends b1 and b2, and a fake API server holding the Local
/// LoadBalancer Service `lb` with b1 as its one (local) endpoint.
fn lb_with_a_local_endpoint() -> (Vec<Backend>, Cluster) {
    node_link();
    let b: Vec<Backend> = (1..=2).map(|i| Backend::start(&format!("b{i}"), i, 8080).unwrap()).collect();
    let cluster = Cluster::start();
    cluster.apply(&lb_service());
    cluster.apply(&slice(&[&b[0]], &[]));
    (b, cluster)
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
        let (b, cluster) = lb_with_a_local_endpoint();
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

/// Issue 8, item 4: readiness tells the truth. With the API server down at start the daemon is
/// alive but not ready; once the lists arrive it programs IPVS, but without `nft` (masquerade
/// and filtering missing) every sync fails: still not ready, and the failure is exported; once
/// `nft` can run, the retried setup succeeds and the daemon turns ready.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn readiness_waits_for_the_api_server_and_for_nftables() {
    in_netns(|| async {
        let (b1, cluster) = web_with_one_backend();
        cluster.stop();
        let bin = std::env::temp_dir().join(format!("kip-no-nft-{}", std::process::id()));
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.to_str().unwrap().to_string();
        let flags: Vec<String> =
            ["--sync-period=2s", "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256"]
                .map(String::from)
                .to_vec();
        let daemon = Daemon::start_with_env(&cluster, &flags, &[("PATH", &path)]);
        let (status, _) = eventually("/healthz answers", PATIENCE, || get("http://127.0.0.1:10256/healthz"));
        // Issue 8, item 7: the open-file limit raised to the hard limit, as Go's runtime does.
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
        let files: Vec<&str> =
            limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
        assert_eq!(files[3], files[4], "soft = hard: {limits}");
        assert_eq!(status, 503, "no lists yet: not ready");
        assert_eq!(get("http://127.0.0.1:10256/livez").map(|(s, _)| s), Some(200), "but alive");

        cluster.resume();
        eventually("web programmed", PATIENCE, || {
            (serving_reals("TCP  10.96.0.10:80")? == reals(&[&b1])).then_some(())
        });
        eventually("the nftables failure exported", PATIENCE, || {
            (daemon.metric_sum("kubeproxy_sync_proxy_rules_iptables_restore_failures_total")? >= 1.0).then_some(())
        });
        assert_eq!(daemon.healthz_status(), 503, "IPVS programmed, nftables missing: not ready");

        std::os::unix::fs::symlink("/usr/sbin/nft", bin.join("nft")).unwrap();
        eventually("ready once nftables can be set up", PATIENCE, || (daemon.healthz_status() == 200).then_some(()));
        assert!(run("nft", &["list", "table", "inet", "kube-ipvs-proxy"], None).is_ok(), "the table is there");
        std::fs::remove_dir_all(&bin).unwrap();
    });
}

/// Issue 8, item 7: 1,100 idle connections and 500 slowloris connections (headers never
/// finished) to a health-check node port, which listens on node addresses by design, starve
/// nothing: /healthz, /livez and the health-check port itself answer, and a change is still
/// programmed.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn held_connections_starve_neither_health_nor_the_sync() {
    use std::io::Write;
    // This test holds 1,600 sockets itself.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    in_netns(|| async {
        let (b, cluster) = lb_with_a_local_endpoint();
        let daemon = Daemon::start(&cluster);
        let url = format!("http://{NODE_IP}:{HEALTH_PORT}/");
        eventually("the health-check port", PATIENCE, || get(&url).filter(|(s, _)| *s == 200));
        let target: std::net::SocketAddr = format!("{NODE_IP}:{HEALTH_PORT}").parse().unwrap();
        let mut held = Vec::new();
        for i in 0..1_600 {
            // Over the daemon's per-listener limit the connection is closed at once; keep going.
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                continue;
            };
            if i >= 1_100 {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n");
            }
            held.push(stream);
        }
        assert!(held.len() >= 1_000, "the connections were made: {}", held.len());
        assert_eq!(daemon.healthz_status(), 200, "/healthz answers");
        assert_eq!(get("http://127.0.0.1:10256/livez").map(|(s, _)| s), Some(200), "/livez answers");
        cluster.apply(&slice(&[&b[0], &b[1]], &[]));
        eventually("the change programmed", PATIENCE, || {
            (serving_reals("TCP  10.96.0.20:80")? == reals(&[&b[0], &b[1]])).then_some(())
        });
        // Held connections time out (10 s without headers): the port serves again.
        eventually("the health-check port answers again", PATIENCE, || get(&url).filter(|(s, _)| *s == 200));
        drop(held);
    });
}
