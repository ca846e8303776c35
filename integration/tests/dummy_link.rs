//! `ipvs::DummyLink` on the VM kernel: idempotent creation and address changes, and `ip`
//! agrees with what it reports.

mod common;

use std::net::IpAddr;

use common::*;
use integration::{in_netns, ip};
use ipvs::DummyLink;

/// The addresses `ip -o addr show kube-ipvs0` lists, with their prefix lengths.
fn ip_addresses() -> Vec<String> {
    let out = ip(&["-o", "addr", "show", "dev", "kube-ipvs0"]).unwrap();
    let mut found: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6").and_then(|_| words.next()).map(str::to_string)
        })
        .collect();
    found.sort();
    found
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn dummy_link_is_idempotent_and_agrees_with_ip() {
    in_netns(|| async {
        assert!(DummyLink::open("kube-ipvs0").await.unwrap().is_none());
        let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
        let again = DummyLink::ensure("kube-ipvs0").await.unwrap();
        assert_eq!(link.index(), again.index(), "ensure twice: the same link");
        let shown = ip(&["-o", "link", "show", "kube-ipvs0"]).unwrap();
        assert!(shown.starts_with(&format!("{}: kube-ipvs0:", link.index())), "{shown}");
        assert!(shown.contains("link/ether"), "{shown}");
        assert!(ip(&["-d", "-o", "link", "show", "kube-ipvs0"]).unwrap().contains("dummy"));

        let v4: IpAddr = addr("10.96.0.10");
        let v6: IpAddr = addr("fd00:96::10");
        // (step, change, addresses expected afterwards as `ip` prints them)
        type Step<'a> = (&'a str, Option<(bool, IpAddr)>, Vec<&'a str>);
        let steps: Vec<Step> = vec![
            ("empty", None, vec![]),
            ("add v4", Some((true, v4)), vec!["10.96.0.10/32"]),
            ("add v4 again", Some((true, v4)), vec!["10.96.0.10/32"]),
            ("add v6", Some((true, v6)), vec!["10.96.0.10/32", "fd00:96::10/128"]),
            ("add v6 again", Some((true, v6)), vec!["10.96.0.10/32", "fd00:96::10/128"]),
            ("remove v4", Some((false, v4)), vec!["fd00:96::10/128"]),
            ("remove v4 again", Some((false, v4)), vec!["fd00:96::10/128"]),
            ("remove v6", Some((false, v6)), vec![]),
            ("remove v6 again", Some((false, v6)), vec![]),
        ];
        for (step, change, want) in steps {
            match change {
                Some((true, a)) => link.add_address(a).await.unwrap_or_else(|e| panic!("{step}: {e}")),
                Some((false, a)) => link.remove_address(a).await.unwrap_or_else(|e| panic!("{step}: {e}")),
                None => {}
            }
            assert_eq!(ip_addresses(), want, "{step}: ip says");
            let mut ours: Vec<String> = link
                .addresses()
                .await
                .unwrap()
                .into_iter()
                .map(|a| format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 }))
                .collect();
            ours.sort();
            assert_eq!(ours, want, "{step}: DummyLink::addresses says");
        }
        again.delete().await.unwrap();
        assert!(ip(&["link", "show", "kube-ipvs0"]).is_err(), "deleted");
        assert!(DummyLink::open("kube-ipvs0").await.unwrap().is_none());
        link.delete().await.unwrap(); // already gone: Ok
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn thousands_of_addresses_are_listed_as_ip_binds_them_and_no_other_links() {
    in_netns(|| async {
        let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
        // Bound by `ip -batch`, the independent peer: a dump of many datagrams.
        let want: Vec<IpAddr> = (0..3000u32).map(|i| std::net::Ipv4Addr::from(0x0a60_0000 + i).into()).collect();
        let batch: String = want.iter().map(|a| format!("addr add {a}/32 dev kube-ipvs0\n")).collect();
        let file = std::env::temp_dir().join(format!("kip-addresses-{}", std::process::id()));
        std::fs::write(&file, batch).unwrap();
        ip(&["-batch", file.to_str().unwrap()]).unwrap();
        std::fs::remove_file(&file).unwrap();
        // An address of another link is not this link's.
        ip(&["link", "add", "other0", "type", "dummy"]).unwrap();
        ip(&["addr", "add", "10.97.0.1/32", "dev", "other0"]).unwrap();
        let mut listed = link.addresses().await.unwrap();
        listed.sort();
        assert_eq!(listed.len(), want.len());
        assert_eq!(listed, want);
        link.delete().await.unwrap();
        ip(&["link", "del", "other0"]).unwrap();
    });
}
