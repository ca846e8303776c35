//! The client and the real `ipvsadm` agree about the kernel's table, in both directions, and
//! `kube-ipvs-proxy debug status` prints exactly what `ipvsadm` prints.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use integration::{Backend, ask_name, in_netns, ipvsadm, ipvsadm_args, proxy_binary, restore_script};
use ipvs::{Client, DummyLink};

/// IPVS keeps every namespace's virtual servers in one hash table per kind and resumes a dump
/// by position in it: a listing taken while another namespace writes can show an entry twice
/// (seen on 6.12). This binary's tests compare listings byte for byte, so they take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn with the kernel's table (a test that failed holding it passes it on).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `ipvsadm -Ln` with `extra` and `kube-ipvs-proxy debug status --numeric` with `extra`.
fn listing_pair(extra: &[&str]) -> (String, String) {
    let mut args = vec!["-Ln"];
    args.extend_from_slice(extra);
    let peer = ipvsadm(&args).unwrap();
    let bin = proxy_binary();
    let out = Command::new(&bin)
        .args(["debug", "status", "--numeric"])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (built by integration/test)", bin.display()));
    assert!(out.status.success(), "debug status {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    (peer, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the client programs, `ipvsadm` shows exactly as if `ipvsadm` had programmed it; and
/// what `ipvsadm` programs, the client reads back as the same configuration.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn client_and_ipvsadm_agree() {
    let _turn = turn();
    let spec = rich_table();
    let ops = add_ops(&spec);
    // One side after the other: IPVS keeps every namespace's virtual servers in one hash table
    // and resumes a dump by position in it, so a dump taken while another namespace adds
    // virtual servers can show one twice (seen on 6.12: the last one three times).
    let by_client = {
        let ops = ops.clone();
        std::thread::spawn(move || {
            in_netns(move || async move {
                let c = Client::connect().await.unwrap();
                for (op, result) in ops.iter().zip(c.apply(&ops).await.unwrap()) {
                    result.unwrap_or_else(|e| panic!("{op}: {e}"));
                }
                (ipvsadm(&["-Ln"]).unwrap(), config_of(&c.table().await.unwrap()))
            })
        })
    };
    let by_client = by_client.join();
    let by_ipvsadm = {
        let ops = ops.clone();
        std::thread::spawn(move || {
            in_netns(move || async move {
                for op in &ops {
                    let args = ipvsadm_args(op);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    ipvsadm(&args).unwrap_or_else(|e| panic!("{op}: {e}"));
                }
                let c = Client::connect().await.unwrap();
                (ipvsadm(&["-Ln"]).unwrap(), config_of(&c.table().await.unwrap()))
            })
        })
    };
    let (client_listing, client_read) = by_client.unwrap();
    let (peer_listing, peer_read) = by_ipvsadm.join().unwrap();
    assert_eq!(client_listing, peer_listing, "ipvsadm -Ln: programmed by the client (left) and by ipvsadm (right)");
    assert_eq!(peer_read, sorted(spec.clone()), "the client reading what ipvsadm programmed");
    assert_eq!(client_read, sorted(spec), "the client reading what it programmed");
    let reals: usize = rich_table().iter().map(|(_, r)| r.len()).sum();
    assert_eq!(
        client_listing.lines().filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress")).count(),
        reals,
        "{client_listing}"
    );
}

/// `debug status --numeric` equals `ipvsadm -Ln` byte for byte, and with `--stats` (also
/// `--exact`) equals `ipvsadm -Ln --stats`, on the rich table restored by `ipvsadm -R` plus a
/// virtual server that has carried traffic, so the counters are not all zero.
#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn debug_status_prints_what_ipvsadm_prints() {
    let _turn = turn();
    in_netns(|| async {
        integration::ipvsadm_restore(&restore_script(&add_ops(&rich_table()))).unwrap();
        let backend = Backend::start("pod-a", 1, 8080).unwrap();
        let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
        link.add_address(addr("10.96.5.1")).await.unwrap();
        ipvsadm(&["-A", "-t", "10.96.5.1:80", "-s", "rr"]).unwrap();
        ipvsadm(&["-a", "-t", "10.96.5.1:80", "-r", "10.244.1.2:8080", "-m"]).unwrap();
        let vip: SocketAddr = "10.96.5.1:80".parse().unwrap();
        for _ in 0..25 {
            assert_eq!(ask_name(vip, Duration::from_secs(5)).unwrap(), backend.name());
        }
        // The kernel folds per-CPU counters into what it reports every 2 s; after that, with
        // no more traffic, both listings see the same numbers.
        std::thread::sleep(Duration::from_millis(2500));
        for extra in [&[][..], &["--stats"][..], &["--stats", "--exact"][..]] {
            let (peer, ours) = listing_pair(extra);
            assert!(peer.lines().count() > 30, "the table is there: {peer}");
            if extra.contains(&"--stats") {
                let line = peer.lines().find(|l| l.starts_with("TCP  10.96.5.1:80")).unwrap();
                assert!(line.split_whitespace().nth(2) == Some("25"), "25 connections counted: {line}");
            }
            assert_eq!(ours, peer, "debug status --numeric {extra:?} (left) vs ipvsadm -Ln {extra:?} (right)");
        }
    });
}
