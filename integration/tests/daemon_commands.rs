//! The other commands on what the real daemon programmed in the VM kernel:
//! - `debug status` names each virtual server's Service while the daemon runs (from its debug
//!   endpoint) and still lists the kernel's entries when none runs;
//! - `cleanup` removes what the daemon made (virtual servers on kube-ipvs0's addresses, the
//!   link, the nftables table) and leaves an operator's own virtual servers alone; NodePort
//!   virtual servers go only with `--node-ports`, and then only those in the NodePort range.

mod daemon_support;

use daemon_support::*;
use integration::{in_netns, ip, ipvsadm, proxy_binary, run};

/// Whether `ipvsadm -Ln` lists a line whose first words are `entry` (`TCP  10.96.0.10:80`, `FWM  7`).
fn listed(entry: &str) -> bool {
    let want: Vec<&str> = entry.split_whitespace().collect();
    let listing = ipvsadm(&["-Ln"]).unwrap();
    listing.lines().any(|l| l.split_whitespace().take(want.len()).eq(want.iter().copied()))
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn cleanup_removes_what_the_daemon_made_and_nothing_else() {
    in_netns(|| async {
        let (_b1, cluster) = web_with_one_backend();
        let daemon = Daemon::start(&cluster);
        let cluster_ip = "TCP 10.96.0.10:80".to_string();
        let node_port = format!("TCP {NODE_IP}:30080");
        eventually("the Service programmed and bound", PATIENCE, || {
            (listed(&cluster_ip) && listed(&node_port) && bound_addresses().contains("10.96.0.10")).then_some(())
        });
        drop(daemon);

        // An operator's own: on an address that is not the node's, on the node's address outside
        // and inside the NodePort range, and a firewall-mark virtual server.
        let foreign = [
            "TCP 203.0.113.7:80".to_string(),
            format!("TCP {NODE_IP}:8080"),
            format!("TCP {NODE_IP}:30099"),
            "FWM 7".to_string(),
        ];
        ipvsadm(&["-A", "-t", "203.0.113.7:80", "-s", "rr"]).unwrap();
        ipvsadm(&["-A", "-t", &format!("{NODE_IP}:8080"), "-s", "rr"]).unwrap();
        ipvsadm(&["-A", "-t", &format!("{NODE_IP}:30099"), "-s", "rr"]).unwrap();
        ipvsadm(&["-A", "-f", "7", "-s", "rr"]).unwrap();

        // (cleanup flags, entries gone after it, entries still there): without the daemon's
        // ownership record a NodePort cannot be told from an operator's entry and stays; with it,
        // exactly the daemon's NodePort goes, not the operator's in the same port range.
        let no_record = std::env::temp_dir().join(format!("kip-no-record-{}", std::process::id()));
        let record = state_dir();
        let steps: [(&[&str], Vec<&String>, Vec<&String>); 2] = [
            (
                &["--state-dir", no_record.to_str().unwrap()],
                vec![&cluster_ip],
                foreign.iter().chain([&node_port]).collect(),
            ),
            (&["--state-dir", record.to_str().unwrap()], vec![&cluster_ip, &node_port], foreign.iter().collect()),
        ];
        for (flags, gone, kept) in steps {
            let args: Vec<&str> = std::iter::once("cleanup").chain(flags.iter().copied()).collect();
            let out = run(proxy_binary().to_str().unwrap(), &args, None).unwrap();
            for entry in gone {
                assert!(!listed(entry), "cleanup {flags:?} left {entry}:\n{out}");
            }
            for entry in kept {
                assert!(listed(entry), "cleanup {flags:?} removed {entry}:\n{out}");
            }
            assert!(ip(&["link", "show", "kube-ipvs0"]).is_err(), "cleanup {flags:?} left kube-ipvs0:\n{out}");
            assert!(
                run("nft", &["list", "table", "inet", "kube-ipvs-proxy"], None).is_err(),
                "cleanup {flags:?} left the nftables table:\n{out}"
            );
        }
        assert!(ip(&["link", "show", "node0"]).is_ok(), "the node's own link stays");
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn debug_status_names_services_from_the_daemon_and_lists_the_kernel_without_it() {
    in_netns(|| async {
        let (_b1, cluster) = web_with_one_backend();
        let mut daemon = Daemon::start(&cluster);
        eventually("the Service programmed", PATIENCE, || {
            (listed("TCP 10.96.0.10:80") && listed(&format!("TCP {NODE_IP}:30080"))).then_some(())
        });
        // Past its start: while the kernel loads nftables' modules (seconds in the VM, three
        // daemons at once) the daemon may not answer within the command's 2 s, and the command
        // then prints the table unnamed, as it should.
        daemon.wait_ready();
        // Its stdout, then what it said on stderr (why it named no Service, when it did not).
        let status = || {
            let out = std::process::Command::new(proxy_binary()).args(["debug", "status"]).output().unwrap();
            assert!(out.status.success(), "debug status failed: {}", String::from_utf8_lossy(&out.stderr));
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let virtual_servers = ["TCP  10.96.0.10:80 ".to_string(), format!("TCP  {NODE_IP}:30080 ")];
        // Whether the Service is named under each of its virtual servers.
        let named = |out: &str| {
            let lines: Vec<&str> = out.lines().collect();
            virtual_servers.iter().all(|vs| {
                lines.windows(2).any(|w| w[0].starts_with(vs.as_str()) && w[1] == "#  service default/web:http")
            })
        };
        let listed_and_bound = |running: bool, out: &str| {
            for vs in &virtual_servers {
                assert!(out.lines().any(|l| l.starts_with(vs.as_str())), "running {running}: {vs} not listed:\n{out}");
            }
            let bound = "kube-ipvs0 addresses (1):\n  10.96.0.10\n";
            assert!(out.contains(bound), "running {running}: kube-ipvs0's address not shown:\n{out}");
        };

        // Running: named (asked again while a loaded VM keeps the daemon from answering in time).
        let deadline = std::time::Instant::now() + PATIENCE;
        let (out, err) = loop {
            let (out, err) = status();
            if named(&out) || std::time::Instant::now() > deadline {
                break (out, err);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        assert!(named(&out), "running: the Service not named under its virtual servers:\n{out}\nstderr:\n{err}");
        listed_and_bound(true, &out);

        // Not running: the kernel's entries all the same, unnamed.
        daemon.kill_9();
        let (out, err) = status();
        assert!(!out.contains("\n#  service "), "not running, yet named:\n{out}\nstderr:\n{err}");
        listed_and_bound(false, &out);
    });
}

/// What `/proc/sys/{name}` holds in this namespace.
fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap().trim().to_string()
}

/// Issue 9, least privilege: `node-settings` (the privileged init container) writes the node's
/// settings, and the daemon then runs with CAP_NET_ADMIN alone, writes no setting, and programs
/// and serves the Service.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_daemon_runs_with_net_admin_alone_after_node_settings() {
    in_netns(|| async {
        let (b1, cluster) = web_with_one_backend();
        ipvsadm(&["-Ln"]).unwrap(); // IPVS loaded: its settings exist in every namespace.
        // A fresh namespace has them off, as a fresh node has.
        for name in ["net/ipv4/vs/conntrack", "net/ipv4/ip_forward"] {
            std::fs::write(format!("/proc/sys/{name}"), "0").unwrap();
        }
        // nf_conntrack_max is the initial namespace's alone (read-only here): left alone.
        let out = run(
            proxy_binary().to_str().unwrap(),
            &[
                "node-settings",
                "--hostname-override",
                NODE,
                "--conntrack-max-per-core=0",
                "--ipvs-rate-estimation=auto",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("node-settings failed: {e}"));
        for name in ["net/ipv4/vs/conntrack", "net/ipv4/vs/expire_nodest_conn", "net/ipv4/ip_forward"] {
            assert_eq!(sysctl(name), "1", "{name} after node-settings:\n{out}");
        }
        assert_eq!(sysctl("net/netfilter/nf_conntrack_tcp_timeout_established"), "86400");
        // `auto`: off before 6.2, whose kernels estimate rates in a timer that holds up real
        // server writes; kept from 6.2 on (kernel threads).
        let release = integration::kernel_release();
        let want = if integration::before_6_2(&release) { "0" } else { "1" };
        assert_eq!(
            sysctl("net/ipv4/vs/run_estimation"),
            want,
            "rate estimation on {release} after node-settings:\n{out}"
        );

        // Every capability but NET_ADMIN out of the bounding set: as root, that is all it gets.
        let flags = [
            "--sync-period=30s".to_string(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--conntrack-max-per-core=0".into(),
        ];
        let wrapper = ["setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all", "--no-new-privs"];
        let daemon = Daemon::start_under(&cluster, &wrapper, &flags, &[]);
        eventually("the Service served and the daemon ready", PATIENCE, || {
            let served = ask_many("10.96.0.10:80", 4).iter().all(|who| who == b1.name());
            (served && daemon.healthz_status() == 200).then_some(())
        });
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
        let effective = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
        assert_eq!(u64::from_str_radix(&effective, 16).unwrap(), 1 << 12, "CAP_NET_ADMIN (12) alone");
        let log = daemon.log();
        assert!(!log.contains("set net."), "the daemon wrote or tried a setting:\n{log}");
    });
}
