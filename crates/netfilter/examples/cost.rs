//! What keeping the nftables table in step costs at scale, measured against the full rewrite in
//! the same run: `netfilter_cost [SERVICES]` (default 10,000), as root in a network namespace
//! of its own (`unshare -n`, or `integration/vm-run`), with the `nft` binary installed.
//!
//! Prints the time of a full rewrite of the sets, of an incremental update adding one hairpin
//! element, and of an update that changes no element (a remote endpoint's change), with ratios.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipvs::Protocol;
use netfilter::{FilterConfig, FilterState, MasqueradeRule, Netfilter, Nft, ServiceFilter, Target};

fn cluster_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i))
}

fn pod(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i))
}

fn filter(locals: &[(IpAddr, u16)], ranges: &[ipnet::IpNet]) -> ServiceFilter {
    ServiceFilter {
        masquerade: MasqueradeRule::OutsideClusterPrefixes,
        bound: true,
        source_ranges: ranges.to_vec(),
        local_endpoints: locals.iter().copied().collect(),
        short_circuit: None,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let services: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let range = "192.0.2.0/24".parse::<ipnet::IpNet>()?;
    // Every tenth Service has source ranges; each has one endpoint on this node.
    let state = FilterState::from_services((0..services).map(|i| {
        let ranges = if i % 10 == 0 { vec![range] } else { vec![] };
        (Target::new(cluster_ip(i), Protocol::Tcp, 80), filter(&[(pod(i), 8080)], &ranges))
    }));
    let config = FilterConfig::new(vec!["10.244.0.0/16".parse()?]);
    let mut netfilter = Netfilter::start(Nft::new(), config)?;

    let mut full = Vec::new();
    for _ in 0..3 {
        netfilter.forget();
        let t = Instant::now();
        netfilter.resync(state.clone())?;
        full.push(t.elapsed());
    }
    let target = Target::new(cluster_ip(0), Protocol::Tcp, 80);
    let (mut one, mut none) = (Vec::new(), Vec::new());
    for round in 0..20u32 {
        let second = (pod(services + round), 8080);
        let t = Instant::now();
        let written = netfilter.update([(target, Some(filter(&[(pod(0), 8080), second], &[range])))])?;
        one.push(t.elapsed());
        assert_eq!(written, 1, "one hairpin element added");
        let t = Instant::now();
        let written = netfilter.update([(target, Some(filter(&[(pod(0), 8080), second], &[range])))])?;
        none.push(t.elapsed());
        assert_eq!(written, 0, "nothing to write");
        netfilter.update([(target, Some(filter(&[(pod(0), 8080)], &[range])))])?;
    }
    let (full, one, none) = (median(full), median(one), median(none));
    println!("{services} services, {} set elements", state.elements().len());
    println!("full rewrite of the sets (one nft transaction): {full:?}");
    println!(
        "one element added (one nft transaction): {one:?}  ({:.0}x faster than the full rewrite)",
        full.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "no element changed (no nft run): {none:?}  ({:.0}x faster than one element)",
        one.as_secs_f64() / none.as_secs_f64().max(1e-9)
    );
    Ok(())
}
