//! `cleanup --upstream-leftovers`: removes the iptables chains upstream kube-proxy's IPVS mode
//! leaves behind after a switch to this proxy, and only those, by name.
//!
//! They must go: their sets are frozen at the switch, so, for example, `KUBE-IPVS-FILTER`
//! rejects new connections to a Service port added afterwards on an existing ClusterIP. They
//! are removed through nftables, which is where iptables' nf_tables backend (the default of
//! current distributions) keeps them, and from the legacy backend with its own programs
//! (`legacy`). kubelet's own `KUBE-*` chains are not in the list and stay.
//! `KUBE-FORWARD` (accepting forwarded Service traffic) stays while the family's FORWARD policy
//! is drop. Then upstream's ipsets, unreferenced once the rules are gone, are destroyed by name
//! over netlink; one still referenced (by rules of the legacy backend) is reported and kept.

use std::collections::BTreeSet;
use std::process::ExitCode;

use netfilter::{Ipsets, NfnetlinkError, SetRemoval};
use serde_json::Value;

use crate::{BoxError, ResultExt};

mod legacy;

/// The chains upstream kube-proxy 1.30's IPVS mode creates (as its `iptables-save` shows).
const CHAINS: &[&str] = &[
    "KUBE-FORWARD",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
    "KUBE-NODE-PORT",
    "KUBE-POSTROUTING",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SERVICES",
    "KUBE-SOURCE-RANGES-FIREWALL",
];

/// The ipsets upstream kube-proxy 1.30's IPVS mode creates, both families (as its `ipset save`
/// shows; IPv6 names are prefixed `KUBE-6-` and cut at ipset's 31 bytes).
const SETS: &[&str] = &[
    "KUBE-CLUSTER-IP",
    "KUBE-EXTERNAL-IP",
    "KUBE-EXTERNAL-IP-LOCAL",
    "KUBE-HEALTH-CHECK-NODE-PORT",
    "KUBE-IPVS-IPS",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOAD-BALANCER-FW",
    "KUBE-LOAD-BALANCER-LOCAL",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    "KUBE-LOOP-BACK",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    "KUBE-NODE-PORT-LOCAL-TCP",
    "KUBE-NODE-PORT-LOCAL-UDP",
    "KUBE-NODE-PORT-SCTP-HASH",
    "KUBE-NODE-PORT-TCP",
    "KUBE-NODE-PORT-UDP",
    "KUBE-6-CLUSTER-IP",
    "KUBE-6-EXTERNAL-IP",
    "KUBE-6-EXTERNAL-IP-LOCAL",
    "KUBE-6-HEALTH-CHECK-NODE-PORT",
    "KUBE-6-IPVS-IPS",
    "KUBE-6-LOAD-BALANCER",
    "KUBE-6-LOAD-BALANCER-FW",
    "KUBE-6-LOAD-BALANCER-LOCAL",
    "KUBE-6-LOAD-BALANCER-SOURCE-CID",
    "KUBE-6-LOAD-BALANCER-SOURCE-IP",
    "KUBE-6-LOOP-BACK",
    "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
    "KUBE-6-NODE-PORT-LOCAL-TCP",
    "KUBE-6-NODE-PORT-LOCAL-UDP",
    "KUBE-6-NODE-PORT-SCTP-HASH",
    "KUBE-6-NODE-PORT-TCP",
    "KUBE-6-NODE-PORT-UDP",
];

/// `cleanup --upstream-leftovers`: the chains (one nft transaction), then the sets. Fails (exit
/// status 1) when a set could not be destroyed for another reason than being absent.
pub async fn remove(dry_run: bool) -> Result<ExitCode, BoxError> {
    let nft = netfilter::Nft::new();
    let listing = nft.list_ruleset_json().context(|| "cannot list the nftables ruleset".into())?;
    let listing: Value =
        serde_json::from_str(&listing).context(|| "cannot read nft's JSON listing of the ruleset".into())?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    match removal(&listing) {
        None => println!("no chains of upstream kube-proxy found in nftables"),
        Some((script, chains)) => {
            if !dry_run {
                nft.run_on_ruleset("remove upstream kube-proxy's chains", &script)
                    .context(|| "cannot remove upstream kube-proxy's chains".into())?;
            }
            for chain in chains {
                println!("{verb} chain {chain}");
            }
        }
    }
    // Then iptables' legacy backend, where older nodes keep them; before the sets, which
    // rules there may still reference.
    let mut failed = legacy::remove(dry_run);
    if dry_run {
        println!("would destroy upstream kube-proxy's ipsets that exist and nothing references");
        return Ok(ExitCode::SUCCESS);
    }
    let mut ipsets = Ipsets::open().context(|| "cannot open an ipset socket".into())?;
    for name in SETS {
        match ipsets.destroy(name).await {
            Ok(SetRemoval::Destroyed) => println!("destroyed ipset {name}"),
            Ok(SetRemoval::Absent) => {}
            Ok(SetRemoval::InUse) => {
                failed += 1;
                eprintln!("ipset {name} is still referenced (by iptables-legacy rules?): kept");
            }
            // No ipset in this kernel (nfnetlink has no such subsystem): no set to destroy.
            Err(NfnetlinkError::Kernel { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
            {
                println!("no ipset support in this kernel: no ipsets to destroy");
                break;
            }
            Err(e) => {
                failed += 1;
                eprintln!("cannot destroy ipset {name}: {e}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The iptables tables (nftables family and table name) upstream writes to.
const TABLES: &[(&str, &str)] =
    &[("ip", "filter"), ("ip", "nat"), ("ip", "mangle"), ("ip6", "filter"), ("ip6", "nat"), ("ip6", "mangle")];

/// The removal, from `nft -j list ruleset`: an nft script (one transaction) deleting the rules
/// that jump to upstream's chains, then the chains; and the chains it removes, as `family
/// table chain`. `None` when there is nothing to remove.
pub fn removal(listing: &Value) -> Option<(String, Vec<String>)> {
    let objects = listing.get("nftables")?.as_array()?;
    let of = |kind: &'static str| objects.iter().filter_map(move |o| o.get(kind));
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    // (family, table) whose filter FORWARD chain drops by default: KUBE-FORWARD's accepts stay.
    let forward_drops: BTreeSet<(String, String)> = of("chain")
        .filter(|c| text(c, "hook") == "forward" && text(c, "policy") == "drop")
        .map(|c| (text(c, "family"), text(c, "table")))
        .collect();
    let doomed: BTreeSet<(String, String, String)> = of("chain")
        .map(|c| (text(c, "family"), text(c, "table"), text(c, "name")))
        .filter(|(f, t, n)| TABLES.contains(&(f.as_str(), t.as_str())) && CHAINS.contains(&n.as_str()))
        .filter(|(f, t, n)| !(n == "KUBE-FORWARD" && forward_drops.contains(&(f.clone(), t.clone()))))
        .collect();
    if doomed.is_empty() {
        return None;
    }
    let mut script = String::new();
    for rule in of("rule") {
        let (family, table, chain) = (text(rule, "family"), text(rule, "table"), text(rule, "chain"));
        if doomed.contains(&(family.clone(), table.clone(), chain.clone())) {
            continue;
        }
        let jumps = targets(rule.get("expr").unwrap_or(&Value::Null));
        let handle = rule.get("handle").and_then(Value::as_u64);
        if let (Some(handle), true) =
            (handle, jumps.iter().any(|t| doomed.contains(&(family.clone(), table.clone(), t.clone()))))
        {
            script.push_str(&format!("delete rule {family} {table} {chain} handle {handle}\n"));
        }
    }
    for (family, table, chain) in &doomed {
        script.push_str(&format!("flush chain {family} {table} {chain}\n"));
    }
    for (family, table, chain) in &doomed {
        script.push_str(&format!("delete chain {family} {table} {chain}\n"));
    }
    Some((script, doomed.iter().map(|(f, t, c)| format!("{f} {t} {c}")).collect()))
}

/// The chains a rule's expressions jump or go to.
fn targets(expr: &Value) -> Vec<String> {
    match expr {
        Value::Array(items) => items.iter().flat_map(targets).collect(),
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| match (key.as_str(), value.get("target").and_then(Value::as_str)) {
                ("jump" | "goto", Some(target)) => vec![target.to_string()],
                _ => targets(value),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(family: &str, table: &str, name: &str, hook: Option<(&str, &str)>) -> Value {
        let mut c = json!({"family": family, "table": table, "name": name, "handle": 1});
        if let Some((hook, policy)) = hook {
            c["hook"] = json!(hook);
            c["policy"] = json!(policy);
        }
        json!({ "chain": c })
    }

    fn rule(family: &str, table: &str, chain: &str, handle: u64, expr: Value) -> Value {
        json!({"rule": {"family": family, "table": table, "chain": chain, "handle": handle, "expr": expr}})
    }

    #[test]
    fn the_sets_are_exactly_those_upstream_made() {
        let save = include_str!("../../tests/fixtures/upstream-1.30/ipset-save.txt");
        let made: BTreeSet<&str> =
            save.lines().filter_map(|l| l.strip_prefix("create ")).filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(made, SETS.iter().copied().collect::<BTreeSet<_>>());
    }

    #[test]
    fn removes_upstreams_chains_and_the_rules_that_jump_to_them_and_nothing_else() {
        let comment = json!({"xt": {"type": "match", "name": "comment"}});
        let listing = json!({"nftables": [
            {"metainfo": {}},
            chain("ip", "filter", "INPUT", Some(("input", "accept"))),
            chain("ip", "filter", "FORWARD", Some(("forward", "accept"))),
            chain("ip", "filter", "KUBE-IPVS-FILTER", None),
            chain("ip", "filter", "KUBE-FORWARD", None),
            chain("ip", "filter", "KUBE-KUBELET-CANARY", None),
            chain("ip6", "filter", "FORWARD", Some(("forward", "drop"))),
            chain("ip6", "filter", "KUBE-FORWARD", None),
            chain("inet", "kube-ipvs-proxy", "KUBE-SERVICES", None),
            rule("ip", "filter", "INPUT", 5, json!([comment, {"jump": {"target": "KUBE-IPVS-FILTER"}}])),
            rule("ip", "filter", "INPUT", 6, json!([{"jump": {"target": "KUBE-KUBELET-CANARY"}}])),
            rule("ip", "filter", "FORWARD", 7, json!([{"goto": {"target": "KUBE-FORWARD"}}])),
            rule("ip", "filter", "KUBE-IPVS-FILTER", 8, json!([{"reject": null}])),
            rule("ip6", "filter", "FORWARD", 9, json!([{"jump": {"target": "KUBE-FORWARD"}}])),
        ]});
        let (script, removed) = removal(&listing).unwrap();
        assert_eq!(removed, ["ip filter KUBE-FORWARD", "ip filter KUBE-IPVS-FILTER"]);
        assert_eq!(
            script,
            "delete rule ip filter INPUT handle 5\n\
             delete rule ip filter FORWARD handle 7\n\
             flush chain ip filter KUBE-FORWARD\n\
             flush chain ip filter KUBE-IPVS-FILTER\n\
             delete chain ip filter KUBE-FORWARD\n\
             delete chain ip filter KUBE-IPVS-FILTER\n"
        );
        let clean = json!({"nftables": [chain("ip", "filter", "KUBE-KUBELET-CANARY", None)]});
        assert!(removal(&clean).is_none());
        assert!(removal(&json!({"nonsense": 1})).is_none());
    }
}
