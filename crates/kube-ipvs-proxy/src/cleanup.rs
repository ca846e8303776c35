//! `kube-ipvs-proxy cleanup`: removes what this proxy owns and nothing else, without the
//! daemon's memory. Never flushes.
//!
//! What can be proven ours from the kernel alone: the dummy link (by name), every address on it
//! (only the proxy binds there), and every tuple virtual server on one of those addresses. A
//! virtual server on a host address (a NodePort, or a LoadBalancer IP the node holds) looks
//! exactly like one an operator made with `ipvsadm`: the daemon's ownership record (under
//! `--state-dir`) names the ones it made, which go; without a record, such entries are removed
//! only when asked with `--node-ports`, and then only on ports of the NodePort range. Firewall-mark virtual servers
//! and anything in `--ipvs-exclude-cidrs` are never touched. The nftables table
//! `inet kube-ipvs-proxy` is the proxy's alone and is deleted whole.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use ipnet::IpNet;
use ipvs::{Operation, Table, VirtualServerId};
use proxier::OwnershipRecord;

use crate::config::parse_cidrs;
use crate::{BoxError, ResultExt};

/// Flags of `kube-ipvs-proxy cleanup`.
#[derive(Debug, Clone, clap::Args)]
pub struct CleanupArgs {
    /// Name of the dummy link holding Service addresses.
    #[arg(long, default_value = "kube-ipvs0", value_name = "NAME")]
    pub interface: String,
    /// Also remove virtual servers on this host's addresses whose port is in the NodePort range
    /// (they cannot be told apart from an operator's own otherwise).
    #[arg(long)]
    pub node_ports: bool,
    /// The cluster's NodePort range, for --node-ports.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST", value_parser = parse_port_range)]
    pub service_node_port_range: RangeInclusive<u16>,
    /// Comma-separated CIDRs whose virtual servers are never touched.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub ipvs_exclude_cidrs: Option<String>,
    /// Print what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Instead of this proxy's state, remove upstream kube-proxy's IPVS-mode iptables chains
    /// (and the rules jumping to them) and its ipsets, after switching a node to this proxy.
    #[arg(long)]
    pub upstream_leftovers: bool,
    /// Where the daemon recorded the virtual servers it made on node addresses.
    #[arg(long, default_value = crate::config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: std::path::PathBuf,
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text.split_once('-').ok_or("expected FIRST-LAST, e.g. 30000-32767")?;
    let first: u16 = first.trim().parse().map_err(|_| format!("{first:?} is not a port"))?;
    let last: u16 = last.trim().parse().map_err(|_| format!("{last:?} is not a port"))?;
    if first > last {
        return Err(format!("empty range {text}"));
    }
    Ok(first..=last)
}

/// What cleanup may delete: see the module docs.
pub struct Ownership<'a> {
    /// Addresses on the dummy link.
    pub bound: &'a BTreeSet<IpAddr>,
    /// Host addresses and the NodePort range, when `--node-ports` is given.
    pub node_ports: Option<(&'a BTreeSet<IpAddr>, RangeInclusive<u16>)>,
    /// What the daemon recorded as made by it.
    pub recorded: &'a BTreeSet<VirtualServerId>,
    /// Never touched.
    pub exclude: &'a [IpNet],
}

impl Ownership<'_> {
    /// Whether virtual server `id` is this proxy's.
    pub fn owns(&self, id: &VirtualServerId) -> bool {
        let VirtualServerId::Tuple { addr, port, .. } = id else {
            return false;
        };
        if self.exclude.iter().any(|c| c.contains(addr)) {
            return false;
        }
        self.bound.contains(addr)
            || self.recorded.contains(id)
            || self.node_ports.as_ref().is_some_and(|(node, range)| node.contains(addr) && range.contains(port))
    }

    /// The virtual servers of `table` this proxy owns, in dump order.
    pub fn select(&self, table: &Table) -> Vec<VirtualServerId> {
        table.services.iter().map(|(vs, _)| vs.server.id).filter(|id| self.owns(id)).collect()
    }
}

/// Runs the cleanup; fails (exit status 1) when some removal failed.
pub async fn run(args: CleanupArgs) -> Result<ExitCode, BoxError> {
    if args.upstream_leftovers {
        return crate::upstream::remove(args.dry_run).await;
    }
    let exclude = match &args.ipvs_exclude_cidrs {
        Some(text) => parse_cidrs(text)?,
        None => Vec::new(),
    };
    let client = ipvs::Client::connect().await.context(|| "cannot open the IPVS netlink family".into())?;
    let link = ipvs::DummyLink::open(&args.interface)
        .await
        .context(|| format!("cannot look up the dummy link {}", args.interface))?;
    let bound: BTreeSet<IpAddr> = match &link {
        Some(link) => link.addresses().await?.into_iter().collect(),
        None => BTreeSet::new(),
    };
    let node: BTreeSet<IpAddr> = if args.node_ports {
        sources::node_addresses(&args.interface).await?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let table = client.table().await?;
    let record = OwnershipRecord::in_dir(&args.state_dir);
    let recorded: BTreeSet<VirtualServerId> = record.read()?.into_iter().collect();
    let ownership = Ownership {
        bound: &bound,
        recorded: &recorded,
        node_ports: args.node_ports.then(|| (&node, args.service_node_port_range.clone())),
        exclude: &exclude,
    };
    let owned = ownership.select(&table);
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    let mut failed = 0;
    if !args.dry_run && !owned.is_empty() {
        let ops: Vec<Operation> = owned.iter().map(|id| Operation::DeleteVirtualServer(*id)).collect();
        for (id, result) in owned.iter().zip(client.apply(&ops).await?) {
            match result {
                Ok(()) => println!("{verb} virtual server {id}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("cannot delete virtual server {id}: {e}");
                }
            }
        }
    } else {
        for id in &owned {
            println!("{verb} virtual server {id}");
        }
    }
    let kept = table.services.len() - owned.len();
    match link {
        Some(link) if failed == 0 && !args.dry_run => {
            link.delete().await?;
            println!("{verb} link {} with {} addresses", args.interface, bound.len());
        }
        Some(_) if args.dry_run => println!("{verb} link {} with {} addresses", args.interface, bound.len()),
        Some(_) => println!("kept link {} because some virtual servers could not be deleted", args.interface),
        None => println!("no link {}", args.interface),
    }
    println!("{kept} virtual servers not owned by this proxy left untouched");
    if failed == 0 && !args.dry_run && !recorded.is_empty() {
        // Everything it named is gone: an empty record, not a stale one.
        record.write(&[])?;
    }
    // The proxy's nftables rules are all in its own table: deleting the table is the cleanup.
    let nft = netfilter::Nft::new();
    let table = netfilter::FilterConfig::new(Vec::new()).table;
    match nft.list_table_json(&table) {
        Ok(None) => println!("no nftables table inet {table}"),
        Ok(Some(_)) if args.dry_run => println!("{verb} nftables table inet {table}"),
        Ok(Some(_)) => match nft.delete_table(&table) {
            Ok(()) => println!("{verb} nftables table inet {table}"),
            Err(e) => {
                failed += 1;
                eprintln!("cannot delete the nftables table: {e}");
            }
        },
        // Without the nft binary the proxy cannot have made the table either.
        Err(e) if e.is_program_missing() => {
            println!("no nft binary: no nftables table to delete")
        }
        Err(e) => {
            failed += 1;
            eprintln!("cannot list the nftables table: {e}");
        }
    }
    // Its accept rules in the host's iptables FORWARD chain, if the policy there dropped.
    for family in netfilter::ForwardAccept::all(0) {
        let program = family.program().to_string();
        if args.dry_run {
            continue;
        }
        match family.remove() {
            Ok(true) => println!("{verb} {program} chain {} and its jump from FORWARD", netfilter::FORWARD_CHAIN),
            Ok(false) => {}
            Err(e) if e.missing => {}
            // The legacy backend without its kernel module holds nothing.
            Err(_) if program.contains("legacy") => {}
            Err(e) => {
                failed += 1;
                eprintln!("cannot remove the forwarding accepts: {e}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Family, Protocol, Stats, VirtualServer, VirtualServerEntry};

    fn tcp(addr: &str, port: u16) -> VirtualServerId {
        VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: addr.parse().unwrap(), port }
    }

    #[test]
    fn only_provable_ownership() {
        let bound: BTreeSet<IpAddr> = ["10.96.0.10", "10.96.0.11"].iter().map(|a| a.parse().unwrap()).collect();
        let node: BTreeSet<IpAddr> = ["192.0.2.10"].iter().map(|a| a.parse().unwrap()).collect();
        let exclude = vec!["10.96.0.11/32".parse().unwrap()];
        // The daemon's record: a NodePort it made, and (by an operator's mistake) an excluded one.
        let recorded: BTreeSet<VirtualServerId> = [tcp("192.0.2.10", 31000), tcp("10.96.0.11", 81)].into();
        let none = BTreeSet::new();
        let conservative = Ownership { bound: &bound, node_ports: None, recorded: &none, exclude: &exclude };
        let with_node_ports =
            Ownership { bound: &bound, node_ports: Some((&node, 30000..=32767)), recorded: &none, exclude: &exclude };
        let with_record = Ownership { bound: &bound, node_ports: None, recorded: &recorded, exclude: &exclude };
        // (virtual server, owned by default, owned with --node-ports, owned with the record)
        let cases = [
            (tcp("10.96.0.10", 80), true, true, true),
            (tcp("10.96.0.11", 80), false, false, false),
            (tcp("10.96.0.11", 81), false, false, false),
            (tcp("10.96.0.99", 80), false, false, false),
            (tcp("192.0.2.10", 30080), false, true, false),
            (tcp("192.0.2.10", 31000), false, true, true),
            (tcp("192.0.2.10", 80), false, false, false),
            (tcp("192.0.2.99", 30080), false, false, false),
            (VirtualServerId::Fwmark { family: Family::V4, mark: 7 }, false, false, false),
        ];
        for (id, default, node_ports, record) in &cases {
            assert_eq!(conservative.owns(id), *default, "{id}");
            assert_eq!(with_node_ports.owns(id), *node_ports, "{id} with --node-ports");
            assert_eq!(with_record.owns(id), *record, "{id} with the record");
        }
        let table = Table {
            services: cases
                .iter()
                .map(|(id, ..)| {
                    (VirtualServerEntry { server: VirtualServer::new(*id, "rr"), stats: Stats::default() }, vec![])
                })
                .collect(),
        };
        assert_eq!(conservative.select(&table), vec![tcp("10.96.0.10", 80)]);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767"), Ok(30000..=32767));
        for bad in ["30000", "a-b", "5-1", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
