//! Scale bench of the daemon, on the VM kernel (run by `integration/bench`, not on the host):
//!
//! 1. cold start: 10,000 Services x 10 endpoints served by the fake API server; time from
//!    starting `kube-ipvs-proxy run` to the kernel holding every virtual server and real
//!    server, against the peer measured in the same run: `ipvsadm -R` of the same rules plus
//!    `ip -batch` binding the same ClusterIPs on a dummy link;
//! 2. change latency: 100 times, one EndpointSlice gets a new endpoint; time from the API
//!    server committing it to the real server being in the kernel; p50 and p99;
//! 3. the daemon's peak resident memory (VmHWM).
//!
//! Sizes can be lowered with `KIP_SCALE_SERVICES` and `KIP_SCALE_ENDPOINTS` for a quick look.

#[path = "../tests/daemon_support/mod.rs"]
mod daemon_support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use daemon_support::{Cluster, Daemon};
use integration::{in_netns, ip, ipvsadm, ipvsadm_restore};
use ipvs::{Protocol, VirtualServerId};
use serde_json::{Value, json};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = 10 << 24 | 96 << 16 | (i as u32 + 1);
    Ipv4Addr::from(n)
}

fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    // 10.(128+generation).x.y: distinct per Service, endpoint and change.
    let n = (i * 16 + j) as u32;
    Ipv4Addr::new(10, 128 + generation as u8, (n >> 8) as u8, n as u8)
}

fn service(i: usize) -> Value {
    let ip = cluster_ip(i).to_string();
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(i: usize, endpoints: &[Ipv4Addr]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

fn vs_id(i: usize) -> VirtualServerId {
    VirtualServerId::Tuple {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(cluster_ip(i)),
        port: 80,
    }
}

/// Virtual and real servers in the kernel now.
async fn kernel_counts(client: &ipvs::Client) -> (usize, usize) {
    match client.table().await {
        Ok(table) => (
            table.services.len(),
            table.services.iter().map(|(_, reals)| reals.len()).sum(),
        ),
        Err(_) => (0, 0),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench` asks bench targets to list themselves.
    }
    let services = env_or("KIP_SCALE_SERVICES", 10_000);
    let per_service = env_or("KIP_SCALE_ENDPOINTS", 10);
    let changes = env_or("KIP_SCALE_CHANGES", 100).min(services);
    println!("daemon_scale: {services} Services x {per_service} endpoints, {changes} changes");
    println!("daemon_scale: proxy binary {}", integration::proxy_binary().display());

    in_netns(move || async move {
        daemon_support::node_link();
        let ipvs = ipvs::Client::connect().await.expect("IPVS netlink");

        // The peer: the same rules through ipvsadm -R, the same addresses through ip -batch.
        let mut rules = String::new();
        let mut addresses = String::new();
        for i in 0..services {
            rules.push_str(&format!("-A -t {}:80 -s rr\n", cluster_ip(i)));
            for j in 0..per_service {
                rules.push_str(&format!(
                    "-a -t {}:80 -r {}:8080 -m -w 1\n",
                    cluster_ip(i),
                    endpoint_ip(i, j, 0)
                ));
            }
            addresses.push_str(&format!("addr add {}/32 dev peer-ipvs0\n", cluster_ip(i)));
        }
        ip(&["link", "add", "peer-ipvs0", "type", "dummy"]).unwrap();
        let start = Instant::now();
        ipvsadm_restore(&rules).unwrap();
        let restore = start.elapsed();
        let start = Instant::now();
        integration::run("ip", &["-batch", "-"], Some(&addresses)).unwrap();
        let bind = start.elapsed();
        assert_eq!(
            kernel_counts(&ipvs).await,
            (services, services * per_service),
            "the peer's table"
        );
        ipvsadm(&["-C"]).unwrap();
        ip(&["link", "del", "peer-ipvs0"]).unwrap();
        let peer = restore + bind;
        println!("peer      ipvsadm -R {restore:.2?} + ip -batch {bind:.2?} = {peer:.2?}");

        // Cold start of the daemon.
        let cluster = Cluster::start();
        let mut objects = Vec::with_capacity(services * 2);
        for i in 0..services {
            objects.push(service(i));
            let endpoints: Vec<Ipv4Addr> = (0..per_service).map(|j| endpoint_ip(i, j, 0)).collect();
            objects.push(slice(i, &endpoints));
        }
        cluster.apply_objects(objects);
        let start = Instant::now();
        // Upstream's default sync period: the periodic full reconcile is part of the cost.
        let mut daemon = Daemon::start_with_sync_period(&cluster, Duration::from_secs(30));
        // Full table dumps are costly and would steal the daemon's CPU, so a few sample
        // Services are probed cheaply and the whole table is only dumped to confirm.
        let samples: Vec<usize> = (0..8).map(|k| k * (services - 1) / 7).collect();
        let mut dumps = 0;
        let cold = loop {
            let mut sampled = true;
            for &i in &samples {
                let reals = ipvs.list_real_servers(&vs_id(i)).await.map(|r| r.len()).unwrap_or(0);
                sampled &= reals == per_service;
            }
            if sampled {
                dumps += 1;
                let counts = kernel_counts(&ipvs).await;
                if counts == (services, services * per_service) {
                    break start.elapsed();
                }
            }
            assert!(
                daemon.running(),
                "the daemon exited during the cold start:\n{}",
                daemon.log()
            );
            assert!(
                start.elapsed() < Duration::from_secs(1800),
                "cold start not done after 30 min"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "daemon    cold start to a fully programmed kernel {cold:.2?} ({dumps} confirming dumps); \
             daemon / (ipvsadm -R + ip -batch) = {:.2}, daemon / ipvsadm -R = {:.2}",
            cold.as_secs_f64() / peer.as_secs_f64(),
            cold.as_secs_f64() / restore.as_secs_f64()
        );

        // Change latency: one slice at a time gets a new first endpoint.
        let mut latencies = Vec::with_capacity(changes);
        for c in 0..changes {
            let i = (c * 7919) % services;
            let mut endpoints: Vec<Ipv4Addr> = (0..per_service).map(|j| endpoint_ip(i, j, 0)).collect();
            let fresh = endpoint_ip(i, 0, 1 + c % 100);
            endpoints[0] = fresh;
            let want = IpAddr::V4(fresh);
            let start = Instant::now();
            cluster.apply_objects(vec![slice(i, &endpoints)]);
            loop {
                let reals = ipvs.list_real_servers(&vs_id(i)).await.unwrap_or_default();
                let present: HashSet<IpAddr> = reals.iter().map(|r| r.server.id.addr).collect();
                if present.contains(&want) {
                    latencies.push(start.elapsed());
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "change {c} not programmed in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        latencies.sort();
        println!(
            "daemon    EndpointSlice change to kernel over {changes} changes: p50 {:.2?} p99 {:.2?} max {:.2?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default()
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .unwrap_or("VmHWM: unknown");
        println!("daemon    peak RSS {}", hwm.trim_start_matches("VmHWM:").trim());
    });
}
