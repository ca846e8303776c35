//! The harness itself on the VM kernel, checked with the real `ipvsadm` and `ip` only (no
//! project code): every scheduler is loaded, namespaces isolate tests, and backends answer
//! through an IPVS virtual server.

use std::net::SocketAddr;
use std::time::Duration;

use integration::{Backend, ask_name, in_netns, ip, ipvsadm};

/// The kernel cannot load modules on demand in the VM, so /init must have loaded each of these.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn every_scheduler_is_loaded() {
    let cases: &[(&str, &[&str])] = &[
        ("rr", &[]),
        ("wrr", &[]),
        ("lc", &[]),
        ("wlc", &[]),
        ("lblc", &[]),
        ("lblcr", &[]),
        ("dh", &[]),
        ("sh", &["-b", "sh-port"]),
        ("sed", &[]),
        ("nq", &[]),
        ("fo", &[]),
        ("ovf", &[]),
        ("mh", &["-b", "mh-port"]),
    ];
    in_netns(move || async move {
        for (i, (scheduler, extra)) in cases.iter().enumerate() {
            let vip = format!("10.0.0.{}:80", i + 1);
            let mut args = vec!["-A", "-t", &vip, "-s", scheduler];
            args.extend_from_slice(extra);
            if let Err(err) = ipvsadm(&args) {
                panic!("scheduler {scheduler}: {err}");
            }
        }
        let listed = ipvsadm(&["-Ln"]).unwrap();
        for (i, (scheduler, _)) in cases.iter().enumerate() {
            let line = format!("TCP  10.0.0.{}:80 {scheduler}", i + 1);
            assert!(listed.lines().any(|l| l.trim_end().starts_with(&line)), "{line:?} missing in:\n{listed}");
        }
    });
}

/// Two tests running at once in their own namespaces each see only their own table and links.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn namespaces_isolate_tests() {
    let run = |vip: &'static str| {
        std::thread::spawn(move || {
            in_netns(move || async move {
                ip(&["link", "add", "kube-ipvs0", "type", "dummy"]).unwrap();
                ipvsadm(&["-A", "-t", vip, "-s", "rr"]).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                (ipvsadm(&["-Ln"]).unwrap(), ip(&["-o", "link", "show"]).unwrap())
            })
        })
    };
    let (a, b) = (run("10.1.0.1:80"), run("10.2.0.1:80"));
    let ((table_a, links_a), (table_b, links_b)) = (a.join().unwrap(), b.join().unwrap());
    assert!(table_a.contains("10.1.0.1:80") && !table_a.contains("10.2.0.1:80"), "{table_a}");
    assert!(table_b.contains("10.2.0.1:80") && !table_b.contains("10.1.0.1:80"), "{table_b}");
    for links in [links_a, links_b] {
        assert_eq!(links.matches("kube-ipvs0").count(), 1, "{links}");
        assert!(!links.contains("eth0"), "a fresh namespace has only lo and what the test made: {links}");
    }
    // The VM's root namespace saw neither.
    let root = ipvsadm(&["-Ln"]).unwrap();
    assert!(!root.contains("10.1.0.1") && !root.contains("10.2.0.1"), "{root}");
}

/// Backends answer with their name, directly and through a virtual server `ipvsadm` programs;
/// round robin alternates between them.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn backends_answer_through_ipvs() {
    in_netns(|| async {
        let backends = [Backend::start("pod-a", 1, 8080).unwrap(), Backend::start("pod-b", 2, 8080).unwrap()];
        let timeout = Duration::from_secs(5);
        for backend in &backends {
            let direct = SocketAddr::new(backend.addr_v4(), 8080);
            assert_eq!(ask_name(direct, timeout).unwrap(), backend.name());
            let direct6 = SocketAddr::new(backend.addr_v6(), 8080);
            assert_eq!(ask_name(direct6, timeout).unwrap(), backend.name());
        }
        ip(&["link", "add", "kube-ipvs0", "type", "dummy"]).unwrap();
        ip(&["addr", "add", "10.96.0.10/32", "dev", "kube-ipvs0"]).unwrap();
        ipvsadm(&["-A", "-t", "10.96.0.10:80", "-s", "rr"]).unwrap();
        for backend in &backends {
            let rs = format!("{}:8080", backend.addr_v4());
            ipvsadm(&["-a", "-t", "10.96.0.10:80", "-r", &rs, "-m"]).unwrap();
        }
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let answers: Vec<String> = (0..4).map(|_| ask_name(vip, timeout).unwrap()).collect();
        assert_eq!(answers.iter().filter(|a| *a == "pod-a").count(), 2, "{answers:?}");
        assert_eq!(answers.iter().filter(|a| *a == "pod-b").count(), 2, "{answers:?}");
        assert_eq!(backends.iter().map(Backend::served).sum::<u64>(), 4 + 4, "2 direct + 2 via IPVS each");
    });
}
