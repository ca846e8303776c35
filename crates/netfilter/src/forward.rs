//! Forwarded service traffic on a host whose iptables `FORWARD` policy is drop (Docker sets it):
//! the replies of masqueraded service traffic are forwarded before IPVS un-NATs them, and that
//! policy drops them. Upstream adds `KUBE-FORWARD` accepts for them; this does the same in a
//! chain of its own, jumped to from `FORWARD`.
//!
//! Not in the proxy's nftables table: an `accept` there ends only that table's chain, and the
//! iptables chain's drop still applies (every base chain on a hook sees the packet). Not written
//! with `nft` into iptables' chain either: iptables-nft cannot read rules it did not write (it
//! then calls the whole `filter` table incompatible, which breaks `iptables-save` for Docker and
//! the operator). So the iptables programs write it, as upstream does, in whichever backend
//! (nftables or legacy) has the dropping policy, only then, and never touch a rule of anyone
//! else.

use std::process::Command;

/// The chain this proxy owns in the `filter` table.
pub const FORWARD_CHAIN: &str = "KUBE-IPVS-PROXY-FORWARD";

const JUMP_COMMENT: &str = "kube-ipvs-proxy forwarding rules";

/// An iptables program failed; names it and what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{program} {operation}: {why}")]
pub struct ForwardError {
    /// `iptables-nft`, `ip6tables-legacy`, ...
    pub program: String,
    /// What was being done.
    pub operation: String,
    /// Its stderr, or why it could not run.
    pub why: String,
    /// Whether the program is not installed.
    pub missing: bool,
}

/// The accept rules for one family, through its iptables program.
#[derive(Debug, Clone)]
pub struct ForwardAccept {
    program: String,
    mark: u32,
}

impl ForwardAccept {
    /// Through `program` (`iptables-nft`, `ip6tables-legacy`, ... from `PATH`), accepting packets that carry
    /// the masquerade mark `mark` and the replies of tracked connections.
    pub fn new(program: &str, mark: u32) -> ForwardAccept {
        ForwardAccept { program: program.to_string(), mark }
    }

    /// Both families in both iptables backends: a host's policy may be in either (nftables
    /// on current distributions, the legacy `x_tables` on older ones), and the proxy cannot
    /// tell which one its host's tools use.
    pub fn all(mark: u32) -> [ForwardAccept; 4] {
        ["iptables-nft", "ip6tables-nft", "iptables-legacy", "ip6tables-legacy"].map(|p| ForwardAccept::new(p, mark))
    }

    /// The program this one runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Whether `FORWARD`'s policy drops (or rejects) what no rule accepts.
    pub fn policy_drops(&self) -> Result<bool, ForwardError> {
        let rules = self.run("read the FORWARD chain", &["-S", "FORWARD"])?;
        Ok(policy_drops(&rules))
    }

    /// Makes the chain hold exactly the accept rules and `FORWARD` jump to it first; idempotent.
    pub fn ensure(&self) -> Result<(), ForwardError> {
        if self.run("check the chain", &["-S", FORWARD_CHAIN]).is_err() {
            self.run("create the chain", &["-N", FORWARD_CHAIN])?;
        }
        let current = self.run("read the chain", &["-S", FORWARD_CHAIN])?;
        let mark = format!("0x{:x}/0x{:x}", self.mark, self.mark);
        let wanted = [
            vec!["-m", "comment", "--comment", "service traffic marked for masquerade", "-m", "mark", "--mark", &mark],
            vec![
                "-m",
                "comment",
                "--comment",
                "replies of service traffic",
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ],
        ];
        if chain_rules(&current).len() != wanted.len() || !self.holds_all(&wanted)? {
            self.run("flush the chain", &["-F", FORWARD_CHAIN])?;
            for rule in &wanted {
                let mut args = vec!["-A", FORWARD_CHAIN];
                args.extend(rule.iter().copied());
                args.extend(["-j", "ACCEPT"]);
                self.run("add an accept rule", &args)?;
            }
        }
        let jump = ["FORWARD", "-m", "comment", "--comment", JUMP_COMMENT, "-j", FORWARD_CHAIN];
        let mut check = vec!["-C"];
        check.extend(jump);
        if self.run("check the jump", &check).is_err() {
            let mut insert = vec!["-I"];
            insert.extend(jump);
            self.run("insert the jump", &insert)?;
        }
        Ok(())
    }

    fn holds_all(&self, rules: &[Vec<&str>]) -> Result<bool, ForwardError> {
        for rule in rules {
            let mut args = vec!["-C", FORWARD_CHAIN];
            args.extend(rule.iter().copied());
            args.extend(["-j", "ACCEPT"]);
            if self.run("check an accept rule", &args).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes the jump and the chain; returns whether there was anything to remove. Nothing
    /// else in the `filter` table is touched.
    pub fn remove(&self) -> Result<bool, ForwardError> {
        let mut removed = false;
        let delete = ["-D", "FORWARD", "-m", "comment", "--comment", JUMP_COMMENT, "-j", FORWARD_CHAIN];
        while self.run("delete the jump", &delete).is_ok() {
            removed = true;
        }
        if self.run("check the chain", &["-S", FORWARD_CHAIN]).is_ok() {
            self.run("flush the chain", &["-F", FORWARD_CHAIN])?;
            self.run("delete the chain", &["-X", FORWARD_CHAIN])?;
            removed = true;
        }
        Ok(removed)
    }

    fn run(&self, operation: &str, args: &[&str]) -> Result<String, ForwardError> {
        let error = |why: String, missing: bool| ForwardError {
            program: self.program.clone(),
            operation: operation.to_string(),
            why,
            missing,
        };
        // -w: wait for the xtables lock rather than fail beside another writer (kubelet, Docker).
        let output = Command::new(&self.program)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| error(e.to_string(), e.kind() == std::io::ErrorKind::NotFound))?;
        if !output.status.success() {
            return Err(error(String::from_utf8_lossy(&output.stderr).trim().to_string(), false));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// For each family and backend whose `FORWARD` policy drops, makes the accept rules present (see
/// [`ForwardAccept::ensure`]); returns the programs that found such a policy. A program that is
/// not installed, or a legacy backend whose kernel module is not loaded, is skipped: nothing
/// can have set a policy there that this proxy could see.
pub fn accept_forwarded(mark: u32) -> Result<Vec<String>, ForwardError> {
    let mut dropping = Vec::new();
    for family in ForwardAccept::all(mark) {
        match family.policy_drops() {
            Ok(true) => {
                family.ensure()?;
                dropping.push(family.program);
            }
            Ok(false) => {}
            Err(e) if e.missing => tracing::debug!("{}: not installed", e.program),
            // The legacy backend without its module (`ip_tables`): no chain, no policy.
            Err(e) if family.program.contains("legacy") => tracing::debug!("{e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(dropping)
}

/// Whether `iptables -S FORWARD` text sets a policy other than ACCEPT.
fn policy_drops(rules: &str) -> bool {
    rules.lines().any(|l| l.starts_with("-P FORWARD ") && !l.ends_with(" ACCEPT"))
}

/// The rules (`-A`) of an `iptables -S CHAIN` text.
fn chain_rules(rules: &str) -> Vec<&str> {
    rules.lines().filter(|l| l.starts_with("-A ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_read_from_the_listing() {
        assert!(policy_drops("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n"));
        assert!(!policy_drops("-P FORWARD ACCEPT\n-A FORWARD -j DROP\n"), "a rule is not the policy");
        assert!(!policy_drops(""));
        assert_eq!(chain_rules("-N X\n-A X -j ACCEPT\n-A X -j RETURN\n").len(), 2);
    }
}
