//! Traffic through what the client programs: a ClusterIP on kube-ipvs0, two backends in their
//! own namespaces behind veth pairs, requests spread over both; a removed real server gets no
//! new connections; counters count and zero.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use integration::{Backend, ask_name, in_netns};
use ipvs::{Client, DummyLink, RealServer, VirtualServer};

const TIMEOUT: Duration = Duration::from_secs(5);

fn ask_many(vip: SocketAddr, n: usize) -> Vec<String> {
    (0..n).map(|i| ask_name(vip, TIMEOUT).unwrap_or_else(|e| panic!("request {i} to {vip}: {e}"))).collect()
}

fn count(answers: &[String], name: &str) -> usize {
    answers.iter().filter(|a| *a == name).count()
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn requests_reach_both_backends_and_not_a_removed_one() {
    // (family, ClusterIP, how a backend's address is picked)
    type Case = (&'static str, &'static str, fn(&Backend) -> std::net::IpAddr);
    let cases: [Case; 2] = [("IPv4", "10.96.0.10", Backend::addr_v4), ("IPv6", "fd00:96::10", Backend::addr_v6)];
    for (family, cluster_ip, backend_addr) in cases {
        in_netns(move || async move {
            let backends = [Backend::start("pod-a", 1, 8080).unwrap(), Backend::start("pod-b", 2, 8080).unwrap()];
            let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
            link.add_address(addr(cluster_ip)).await.unwrap();
            let c = Client::connect().await.unwrap();
            let id = tcp(cluster_ip, 80);
            c.add_virtual_server(&VirtualServer::new(id, "rr")).await.unwrap();
            let reals: Vec<RealServer> = backends.iter().map(|b| RealServer::new(backend_addr(b), 8080, 1)).collect();
            for r in &reals {
                c.add_real_server(&id, r).await.unwrap();
            }
            let vip = SocketAddr::new(addr(cluster_ip), 80);

            let answers = ask_many(vip, 6);
            assert_eq!(
                (count(&answers, "pod-a"), count(&answers, "pod-b")),
                (3, 3),
                "{family}: rr spreads: {answers:?}"
            );
            // The kernel folds its per-CPU counters into what it reports every 2 s (the rate
            // estimator's tick), so the counts show up to that much later.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
            let entry = loop {
                let entry = c.get_virtual_server(&id).await.unwrap();
                if entry.stats.conns >= 6 || tokio::time::Instant::now() > deadline {
                    break entry;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(entry.stats.conns, 6, "{family}: the virtual server counted the connections");
            assert!(entry.stats.in_pkts > 0 && entry.stats.out_bytes > 0, "{family}: {:?}", entry.stats);

            c.delete_real_server(&id, &reals[1].id).await.unwrap();
            let served_b = backends[1].served();
            let answers = ask_many(vip, 4);
            assert_eq!(count(&answers, "pod-a"), 4, "{family}: after removing pod-b: {answers:?}");
            assert_eq!(backends[1].served(), served_b, "{family}: pod-b got no new connection");

            c.zero(Some(&id)).await.unwrap();
            let entry = c.get_virtual_server(&id).await.unwrap();
            assert_eq!((entry.stats.conns, entry.stats.in_pkts), (0, 0), "{family}: zeroed");
        });
    }
}
