use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: RunArgs,
}

fn args(flags: &[&str]) -> RunArgs {
    Cli::try_parse_from(std::iter::once("run").chain(flags.iter().copied())).unwrap().args
}

fn file(body: &str) -> FileConfig {
    FileConfig::parse(&format!("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"))
        .unwrap()
}

fn host() -> Result<String, String> {
    Ok("Node-A\n".into())
}

#[test]
fn defaults_are_upstreams() {
    let (s, warnings) = Settings::merge(&args(&[]), FileConfig::default(), host).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(s.node_name, "node-a", "hostname trimmed and lowercased as upstream does");
    assert_eq!(s.sync_period, Duration::from_secs(30));
    assert_eq!(s.min_sync_period, Duration::ZERO);
    assert_eq!(s.scheduler, "rr");
    assert_eq!(s.healthz_bind_address, Some("0.0.0.0:10256".parse().unwrap()));
    assert_eq!(s.metrics_bind_address, Some("127.0.0.1:10249".parse().unwrap()));
    assert_eq!(s.interface, "kube-ipvs0");
    assert_eq!(s.timeouts, None);
    assert!(s.node_port_addresses.is_empty());
    assert!(!s.strict_arp && !s.masquerade_all);
    // Off would also stop `ipvsadm --stats` counting before Linux 6.2: the operator's choice.
    assert_eq!(s.rate_estimation, super::RateEstimation::Keep);
    assert_eq!(s.masquerade_bit, 14);
    assert_eq!(s.kubeconfig, None);
}

#[test]
fn flags_override_the_file() {
    type Check = fn(&Settings) -> bool;
    let cases: &[(&[&str], &str, Check)] = &[
        (&[], "ipvs:\n  syncPeriod: 1m0s\n", |s| s.sync_period == Duration::from_secs(60)),
        (&["--ipvs-sync-period", "10s"], "ipvs:\n  syncPeriod: 1m0s\n", |s| s.sync_period == Duration::from_secs(10)),
        (&["--sync-period=5s"], "", |s| s.sync_period == Duration::from_secs(5)),
        (&["--min-sync-period=250ms"], "ipvs:\n  minSyncPeriod: 1s\n", |s| {
            s.min_sync_period == Duration::from_millis(250)
        }),
        (&["--ipvs-scheduler", "lc"], "ipvs:\n  scheduler: wrr\n", |s| s.scheduler == "lc"),
        (&[], "ipvs:\n  scheduler: wrr\n", |s| s.scheduler == "wrr"),
        (&["--masquerade-all"], "", |s| s.masquerade_all),
        (&["--masquerade-all=false"], "masqueradeAll: true\n", |s| !s.masquerade_all),
        (&["--masquerade-bit", "15"], "iptables:\n  masqueradeBit: 16\n", |s| s.masquerade_bit == 15),
        (&[], "iptables:\n  masqueradeBit: 16\n", |s| s.masquerade_bit == 16),
        (&[], "iptables:\n  masqueradeBit: 0\n", |s| s.masquerade_bit == 0),
        (&[], "iptables:\n  masqueradeBit: null\n", |s| s.masquerade_bit == 14),
        (&["--ipvs-strict-arp"], "", |s| s.strict_arp),
        (&["--ipvs-rate-estimation=auto"], "", |s| s.rate_estimation == super::RateEstimation::Auto),
        (&[], "ipvs:\n  strictARP: true\n", |s| s.strict_arp),
        (&["--cluster-cidr", "10.0.0.0/8,fd00::/8"], "clusterCIDR: 10.244.0.0/16\n", |s| s.cluster_cidrs.len() == 2),
        (&[], "clusterCIDR: 10.244.0.0/16\n", |s| s.cluster_cidrs == vec!["10.244.0.0/16".parse().unwrap()]),
        (&["--ipvs-exclude-cidrs", "192.0.2.0/24"], "", |s| s.exclude_cidrs.len() == 1),
        (&["--nodeport-addresses", "primary"], "", |s| s.node_port_addresses == [NodePortAddress::Primary]),
        (&["--hostname-override", "worker-1"], "hostnameOverride: worker-2\n", |s| s.node_name == "worker-1"),
        (&[], "hostnameOverride: worker-2\n", |s| s.node_name == "worker-2"),
        (&["--kubeconfig", "/a"], "clientConnection:\n  kubeconfig: /b\n", |s| s.kubeconfig == Some("/a".into())),
        (&[], "clientConnection:\n  kubeconfig: /b\n", |s| s.kubeconfig == Some("/b".into())),
        (&["--healthz-bind-address", ""], "", |s| s.healthz_bind_address.is_none()),
        (&["--healthz-bind-address", "127.0.0.1"], "", |s| {
            s.healthz_bind_address == Some("127.0.0.1:10256".parse().unwrap())
        }),
        (&[], "healthzBindAddress: \"::\"\n", |s| s.healthz_bind_address == Some("[::]:10256".parse().unwrap())),
        (&["--metrics-bind-address", "0.0.0.0:9999"], "metricsBindAddress: 1.2.3.4:1\n", |s| {
            s.metrics_bind_address == Some("0.0.0.0:9999".parse().unwrap())
        }),
        (&["--bind-address", "10.1.2.3"], "", |s| s.bind_address == "10.1.2.3".parse::<IpAddr>().unwrap()),
        (&["--interface", "ipvs-test0"], "", |s| s.interface == "ipvs-test0"),
        (&["--from-file", "objs.yaml"], "", |s| s.from_file == Some("objs.yaml".into())),
        (&["--ipvs-tcp-timeout", "15m"], "ipvs:\n  udpTimeout: 30s\n", |s| {
            s.timeouts == Some(ipvs::Timeouts { tcp: 900, tcp_fin: 0, udp: 30 })
        }),
        (&["--ipvs-tcpfin-timeout", "0s"], "", |s| s.timeouts.is_none()),
    ];
    for (flags, body, check) in cases {
        let (settings, _) = Settings::merge(&args(flags), file(body), host).unwrap();
        assert!(check(&settings), "flags {flags:?} over file {body:?} gave {settings:?}");
    }
}

#[test]
fn warnings_name_what_is_ignored() {
    let cases: &[(&[&str], &str, &[&str])] = &[
        (&[], "mode: iptables\n", &["mode is \"iptables\""]),
        (&["--proxy-mode", "nftables"], "", &["--proxy-mode is \"nftables\""]),
        (&["--proxy-mode", "ipvs"], "mode: ipvs\n", &[]),
        (
            &[],
            "oomScoreAdj: -999\nconntrack:\n  maxPerCore: 1\n",
            &["ignored (they do not apply to this proxy): oomScoreAdj"],
        ),
    ];
    for (flags, body, want) in cases {
        let (_, warnings) = Settings::merge(&args(flags), file(body), host).unwrap();
        assert_eq!(warnings.len(), want.len(), "{warnings:?}");
        for (w, needle) in warnings.iter().zip(want.iter()) {
            assert!(w.contains(needle), "{w:?} should contain {needle:?}");
        }
    }
}

#[test]
fn bad_values_are_errors() {
    let cases: &[&[&str]] = &[
        &["--ipvs-scheduler", "roundrobin"],
        &["--cluster-cidr", "10.0.0.0/33"],
        &["--healthz-bind-address", "localhost:80"],
        &["--nodeport-addresses", "primary,10.0.0.0/8"],
    ];
    for flags in cases {
        assert!(Settings::merge(&args(flags), FileConfig::default(), host).is_err(), "{flags:?}");
    }
    assert!(Cli::try_parse_from(["run", "--ipvs-sync-period", "30"]).is_err(), "a duration needs a unit");
    let no_host = || Err("no hostname".to_string());
    assert!(matches!(Settings::merge(&args(&[]), FileConfig::default(), no_host), Err(ConfigError::Hostname(_))));
}

/// `/configz` on the metrics address shows the configuration in use as upstream does: a
/// KubeProxyConfiguration under `kubeproxy.config.k8s.io`, flags applied over the file.
#[test]
fn configz_shows_the_configuration_in_use() {
    let body = "mode: ipvs\nipvs:\n  scheduler: lc\n  syncPeriod: 45s\n";
    let (settings, _) = Settings::merge(&args(&["--cluster-cidr=10.244.0.0/16"]), file(body), host).unwrap();
    let z = settings.configz();
    let c = &z["kubeproxy.config.k8s.io"];
    assert_eq!(c["kind"], "KubeProxyConfiguration");
    assert_eq!(c["mode"], "ipvs");
    assert_eq!(c["ipvs"]["scheduler"], "lc");
    assert_eq!(c["ipvs"]["syncPeriod"], "45s");
    assert_eq!(c["clusterCIDR"], "10.244.0.0/16");
    assert_eq!(c["healthzBindAddress"], "0.0.0.0:10256");
}

/// Issue 8, item 2: what upstream's validation refuses is refused here too (with the field
/// named), durations stay within Go's range (a longer one panicked in the schedule), and no value
/// is silently changed.
#[test]
fn upstreams_refusals_are_errors() {
    // (flags, configuration file body, the field the error names)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--ipvs-sync-period=10s", "--ipvs-min-sync-period=20s"], "", "ipvs.minSyncPeriod"),
        (&["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"], "", "clusterCIDR"),
        (&["--cluster-cidr=10.0.0.0/8,fd00::/64,10.2.0.0/16"], "", "clusterCIDR"),
        (&[], "clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n", "clusterCIDR"),
        (&[], "ipvs: [1, 2]\n", "ipvs"),
        (&[], "conntrack: 5\n", "conntrack"),
        (&["--ipvs-tcp-timeout=500ms"], "", "ipvs.tcpTimeout"),
        (&[], "ipvs:\n  udpTimeout: 1.5s\n", "ipvs.udpTimeout"),
    ];
    for (flags, body, field) in cases {
        let file = if body.is_empty() {
            Ok(FileConfig::default())
        } else {
            FileConfig::parse(&format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"
            ))
        };
        let result = file.and_then(|f| Settings::merge(&args(flags), f, host));
        let err = result.expect_err(&format!("{flags:?} {body:?} must be refused")).to_string();
        assert!(err.contains(field), "{flags:?} {body:?}: {err}");
    }
    // Go's longest duration is 2562047h47m16.854775807s; the flag that panicked is refused.
    assert!(Cli::try_parse_from(["run", "--ipvs-sync-period", "2562047788015215h"]).is_err());
    assert!(Cli::try_parse_from(["run", "--ipvs-sync-period", "2562047h"]).is_ok());
    // Dual-stack is two CIDRs of two families; whole-second timeouts are kept.
    let (s, _) = Settings::merge(
        &args(&["--cluster-cidr=10.0.0.0/8,fd00::/64", "--ipvs-tcp-timeout=15m"]),
        FileConfig::default(),
        host,
    )
    .unwrap();
    assert_eq!(s.cluster_cidrs.len(), 2);
    assert_eq!(s.timeouts.unwrap().tcp, 900);
}

/// Issue 7, item 3: upstream's detectLocalMode, from flags or the file, validated as upstream.
#[test]
fn detect_local_mode_from_flags_and_file() {
    // (flags, file body, mode or the field an error names)
    let cases: &[(&[&str], &str, Result<DetectLocal, &str>)] = &[
        (&[], "", Ok(DetectLocal::ClusterCidr)),
        (&["--detect-local-mode=NodeCIDR"], "", Ok(DetectLocal::NodeCidr)),
        (
            &[],
            "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n",
            Ok(DetectLocal::BridgeInterface("cbr0".into())),
        ),
        (
            &["--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth"],
            "",
            Ok(DetectLocal::InterfaceNamePrefix("veth".into())),
        ),
        (&["--detect-local-mode=BridgeInterface"], "", Err("detectLocal.bridgeInterface")),
        (
            &["--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=a b"],
            "",
            Err("detectLocal.interfaceNamePrefix"),
        ),
        (&["--detect-local-mode=Magic"], "", Err("detectLocalMode")),
    ];
    for (flags, body, want) in cases {
        let result = Settings::merge(&args(flags), file(body), host).map(|(s, _)| s.detect_local);
        match (result, want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want, "{flags:?} {body:?}"),
            (Err(e), Err(field)) => assert!(e.to_string().contains(field), "{flags:?}: {e}"),
            (got, want) => panic!("{flags:?} {body:?}: got {got:?}, want {want:?}"),
        }
    }
}
