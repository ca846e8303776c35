//! Stale UDP conntrack entries, end to end. A UDP client outside the cluster keeps one source
//! port (as a resolver does) and sends to a NodePort every 50 ms. NodePort traffic must be
//! masqueraded (its endpoint may be on another node, which would answer the client directly),
//! and masquerade is decided once per conntrack entry: an entry made while nothing answered
//! there (after a reboot, before the proxy programmed the Service) carries no masquerade, and the
//! kernel keeps it as long as the client keeps sending. Upstream deletes such entries when a
//! Service gets endpoints, and those of a real server when it goes; so does this proxy.

mod daemon_support;
mod netfilter_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::*;
use integration::{Backend, in_netns};
use netfilter_support::Peer;

/// Far longer than any sync the test triggers: only the incremental sync may make it pass.
const LONG_SYNC_PERIOD: Duration = Duration::from_secs(300);
/// One incremental sync, with room for the VM's slowness.
const ONE_SYNC: Duration = Duration::from_secs(5);

/// A UDP Service `dns` (ClusterIP 10.96.0.53:53, NodePort 30053, to target port 8080) and its
/// slice of `backends`.
fn dns(backends: &[&Backend]) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dns\n  namespace: default\nspec:\n  type: NodePort\n\
         \x20 clusterIP: 10.96.0.53\n  clusterIPs: [10.96.0.53]\n  ipFamilies: [IPv4]\n  ports:\n\
         \x20 - name: dns\n    port: 53\n    targetPort: 8080\n    protocol: UDP\n    nodePort: 30053\n---\n{}",
        slice_yaml_of("dns", "dns", "UDP", backends)
    )
}

/// Sends a datagram every 50 ms from one fixed source port to a target, recording each answer.
struct Resolver {
    answers: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Resolver {
    /// Starts inside `peer`'s namespace, from source port 40053.
    fn start(peer: &Peer, target: &str) -> Resolver {
        let target: SocketAddr = target.parse().unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answers.clone(), stop.clone());
        peer.run(move || {
            let socket = UdpSocket::bind("0.0.0.0:40053").unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            // A thread started here shares the peer's namespace.
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !s.load(Ordering::SeqCst) {
                    let _ = socket.send_to(b"?", target);
                    if let Ok((n, _)) = socket.recv_from(&mut buf) {
                        let name = String::from_utf8_lossy(&buf[..n]).to_string();
                        a.lock().unwrap().push((Instant::now(), name));
                    }
                }
            });
        });
        Resolver { answers, stop }
    }

    /// Waits until the answer `answer` arrives after `since`, at most `limit`; the error names
    /// what it got.
    fn answered(&self, answer: &str, since: Instant, limit: Duration) -> Result<(), String> {
        let answered = || self.answers.lock().unwrap().iter().any(|(at, n)| *at >= since && n == answer);
        let start = Instant::now();
        while !answered() {
            if start.elapsed() > limit {
                let got: Vec<String> = self.answers.lock().unwrap().iter().map(|(_, n)| n.clone()).collect();
                let got = &got[got.len().saturating_sub(5)..];
                return Err(format!(
                    "no answer {answer:?} within {limit:?} of the kernel change; last answers: {got:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn a_udp_flow_older_than_its_service_is_masqueraded_once_the_service_has_endpoints() {
    in_netns(|| async {
        node_link();
        let b1 = Backend::start("b1", 1, 8080).unwrap();
        let b2 = Backend::start("b2", 2, 8080).unwrap();
        let outside = Peer::client(9);
        let cluster = Cluster::start();
        let daemon = Daemon::start_with_sync_period_and_env(
            &cluster,
            LONG_SYNC_PERIOD,
            &[("KUBE_IPVS_PROXY_LOG", "info,netfilter=debug")],
        );
        let node_port = format!("UDP  {NODE_IP}:30053");

        // The node tracks connections before the proxy runs, as every node does (kubelet, CNI,
        // a host firewall): here a host firewall's table.
        integration::run(
            "nft",
            &["-f", "-"],
            Some("add table inet host\nadd chain inet host input { type filter hook input priority 0; }\nadd rule inet host input ct state established,related accept\n"),
        )
        .unwrap();
        // The client sends before the Service exists: its datagrams reach the node, no socket
        // takes them, and the kernel keeps their conntrack entry, with no masquerade.
        let resolver = Resolver::start(&outside, &format!("{NODE_IP}:30053"));
        std::thread::sleep(Duration::from_secs(1));
        cluster.apply(&dns(&[&b1]));
        eventually("b1 in IPVS", PATIENCE, || (serving_reals(&node_port)? == reals(&[&b1])).then_some(()));
        // Masqueraded: b1 sees the node's address on its link, not the client's.
        resolver.answered("b1 10.244.1.1", Instant::now(), ONE_SYNC).unwrap_or_else(|e| {
            panic!(
                "{e}\nconntrack:\n{}\ndaemon log:\n{}",
                std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").unwrap_or_else(|e| e.to_string()),
                daemon.log()
            )
        });

        // The endpoint is replaced; the same flow reaches the new one, masqueraded.
        cluster.apply(&dns(&[&b2]));
        eventually("b2 replaces b1 in IPVS", PATIENCE, || (serving_reals(&node_port)? == reals(&[&b2])).then_some(()));
        resolver
            .answered("b2 10.244.2.1", Instant::now(), ONE_SYNC)
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
        drop(resolver);
        drop(daemon);
    });
}
