//! Upstream's chains in iptables' legacy backend (`x_tables`), which nftables cannot see: read
//! with `iptables-legacy-save`, removed with one `iptables-legacy-restore --noflush` per family
//! (atomic per table), the same chains by name as in the nftables backend.

use std::io::Write;
use std::process::{Command, Stdio};

use super::CHAINS;

/// Each family's legacy programs: (save, restore).
const PROGRAMS: &[(&str, &str)] =
    &[("iptables-legacy-save", "iptables-legacy-restore"), ("ip6tables-legacy-save", "ip6tables-legacy-restore")];

/// The removal for one family, from its `iptables-legacy-save` text: a restore script deleting
/// the rules elsewhere that jump to upstream's chains, then the chains; and the chains, as
/// `table chain`. `None` when there is nothing to remove. `KUBE-FORWARD` stays while the
/// FORWARD policy is drop.
pub(super) fn removal(save: &str) -> Option<(String, Vec<String>)> {
    let (mut script, mut removed) = (String::new(), Vec::new());
    let mut lines = save.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(table) = line.strip_prefix('*') else { continue };
        let mut section = Vec::new();
        while let Some(l) = lines.next_if(|l| *l != "COMMIT") {
            section.push(l);
        }
        let forward_drops = section.iter().any(|l| l.starts_with(":FORWARD DROP"));
        let doomed: Vec<&str> = section
            .iter()
            .filter_map(|l| l.strip_prefix(':')?.split(' ').next())
            .filter(|c| CHAINS.contains(c) && !(*c == "KUBE-FORWARD" && forward_drops))
            .collect();
        if doomed.is_empty() {
            continue;
        }
        script.push_str(&format!("*{table}\n"));
        for rule in section.iter().filter_map(|l| l.strip_prefix("-A ")) {
            let chain = rule.split(' ').next().unwrap_or_default();
            if !doomed.contains(&chain) && jump_target(rule).is_some_and(|t| doomed.contains(&t)) {
                script.push_str(&format!("-D {rule}\n"));
            }
        }
        for verb in ["-F", "-X"] {
            for chain in &doomed {
                script.push_str(&format!("{verb} {chain}\n"));
            }
        }
        script.push_str("COMMIT\n");
        removed.extend(doomed.iter().map(|c| format!("{table} {c}")));
    }
    (!removed.is_empty()).then_some((script, removed))
}

/// The chain a rule jumps or goes to (`-j X` / `-g X`, the last one: targets come last).
fn jump_target(rule: &str) -> Option<&str> {
    let at = rule.rfind(" -j ").or_else(|| rule.rfind(" -g "))?;
    rule[at + 4..].split(' ').next()
}

/// Removes upstream's chains from both families' legacy backend; prints what went, returns
/// how many removals failed (a backend that cannot be read counts). A family whose programs
/// are missing, or whose backend has no tables (its module not loaded), has nothing to remove.
pub(super) fn remove(dry_run: bool) -> usize {
    let mut failed = 0;
    for (save, restore) in PROGRAMS {
        let Ok(listing) = Command::new(save).output() else { continue };
        if !listing.status.success() {
            // Tables exist but cannot be read: typically a container without CAP_NET_RAW,
            // which the legacy backend's socket needs. Said, so that nothing is left silently.
            failed += 1;
            let why = String::from_utf8_lossy(&listing.stderr);
            eprintln!("{save}: cannot read iptables' legacy backend ({}); its chains, if any, are left", why.trim());
            continue;
        }
        let Some((script, chains)) = removal(&String::from_utf8_lossy(&listing.stdout)) else { continue };
        if !dry_run && let Err(e) = run_restore(restore, &script) {
            failed += 1;
            eprintln!("{restore}: cannot remove upstream kube-proxy's chains: {e}");
            continue;
        }
        let verb = if dry_run { "would delete" } else { "deleted" };
        for chain in chains {
            println!("{verb} chain {chain} ({save})");
        }
    }
    failed
}

fn run_restore(program: &str, script: &str) -> std::io::Result<()> {
    let mut child =
        Command::new(program).args(["-w", "--noflush"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_chains_and_only_the_jumps_to_them_go() {
        let save = include_str!("../../tests/fixtures/upstream-1.30/iptables-save.txt");
        let (script, chains) = removal(save).unwrap();
        assert!(chains.contains(&"filter KUBE-FORWARD".to_string()), "FORWARD accepts: {chains:?}");
        assert!(chains.contains(&"nat KUBE-SERVICES".to_string()));
        assert!(
            script.contains("-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
        );
        assert!(script.contains("-D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n"));
        // Rules inside the doomed chains go with the flush, not one by one.
        assert!(!script.contains("-D KUBE-"), "{script}");
        assert_eq!(script.matches("COMMIT").count(), 2, "filter and nat: {script}");
        // A foreign chain and its rules are left; KUBE-FORWARD stays under a drop policy.
        let foreign = "*filter\n:FORWARD DROP [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-FIREWALL - [0:0]\n\
                       -A FORWARD -j KUBE-FORWARD\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n";
        assert_eq!(removal(foreign), None);
    }
}
