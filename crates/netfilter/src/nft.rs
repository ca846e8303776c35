//! Running the scripts with the `nft` binary, as upstream's own nftables mode does, and keeping
//! the kernel's sets in step with a [`FilterState`] at a cost proportional to each change.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::elements::{ElementBytes, ElementSocket, Transaction, element_bytes, with_socket};
use crate::nfnetlink::NfnetlinkError;
use crate::script::{
    DIGEST_SET, FilterConfig, changes_digest, delete_table_script, digest_script, full_script, parse_digest,
    skeleton_script, table_digest,
};
use crate::set_digest::SetDigests;
use crate::state::{ElementChanges, FilterState, ServiceFilter, Target};

/// Why an nftables operation failed; names the table and the operation.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` binary could not be run (missing, not executable, pipe failure).
    #[error("{table}: {operation}: cannot run {program}: {source}")]
    Spawn {
        /// What was concerned: `table inet NAME`, or `ruleset`.
        table: String,
        /// What was being done.
        operation: &'static str,
        /// The binary.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused the script; the kernel applied none of it.
    #[error("{table}: {operation}: nft failed ({status}): {stderr}")]
    Refused {
        /// What was concerned: `table inet NAME`, or `ruleset`.
        table: String,
        /// What was being done.
        operation: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The accept rules for forwarded service traffic could not be written into the host's
    /// iptables `FORWARD` chain, whose policy drops it.
    #[error("forwarded service traffic: {0}")]
    Forward(#[from] crate::ForwardError),
    /// The kernel refused a transaction of set elements (sent over nfnetlink), or the socket
    /// failed; none of it was applied.
    #[error("table inet {table}: {operation}: {source}")]
    Elements {
        /// The table concerned.
        table: String,
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: NfnetlinkError,
    },
    /// The configured mark bit is beyond 31.
    #[error("table inet {table}: masquerade bit {bit} is not 0..=31")]
    MarkBit {
        /// The table concerned.
        table: String,
        /// The bit asked for.
        bit: u8,
    },
}

impl NftError {
    /// Whether the table (or set) the operation named does not exist: the kernel's `ENOENT`,
    /// which `nft` reports only as its text (`No such file or directory`) on stderr.
    pub fn is_no_such_table(&self) -> bool {
        matches!(self, NftError::Refused { stderr, .. } if stderr.contains("No such file or directory"))
    }

    /// Whether the `nft` program is not installed (so no table of the proxy's can exist either).
    pub fn is_program_missing(&self) -> bool {
        matches!(self, NftError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The netlink port ids of this process's writers: its element sockets, and the last `nft`
/// processes it ran (an `nft` binds its socket to its own pid, as numbered in its pid
/// namespace, which is what `Child::id` says). The table monitor tells the proxy's own
/// transactions from others' by the port id the kernel puts in each `NEWGEN` notification's
/// header. Not by the pid attribute of `NEWGEN`: that is the writing thread's id (not the
/// process's), and numbered in the host's pid namespace, not the pod's.
static WRITERS: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
/// This process's element sockets (a few: one, and one more after each socket failure).
static SOCKETS: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
const WRITERS_KEPT: usize = 64;

/// Whether netlink port `port` is one of this process's writers.
pub(crate) fn is_own_writer(port: u32) -> bool {
    [&WRITERS, &SOCKETS].iter().any(|w| w.lock().is_ok_and(|w| w.contains(&port)))
}

/// Records the port of one of this process's element sockets.
pub(crate) fn record_socket(port: u32) {
    remember(&SOCKETS, port);
}

fn remember(writers: &Mutex<VecDeque<u32>>, port: u32) {
    if let Ok(mut writers) = writers.lock() {
        if writers.len() == WRITERS_KEPT {
            writers.pop_front();
        }
        writers.push_back(port);
    }
}

/// The `nft` binary: runs scripts as single transactions and lists the table. Each call blocks
/// for as long as `nft` runs (milliseconds for an incremental change); async callers should
/// wrap it in `spawn_blocking` when that matters.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    fn default() -> Nft {
        Nft::new()
    }
}

impl Nft {
    /// `nft` from `PATH`.
    pub fn new() -> Nft {
        Nft { program: PathBuf::from("nft") }
    }

    /// The binary at `program`.
    pub fn with_program(program: impl Into<PathBuf>) -> Nft {
        Nft { program: program.into() }
    }

    /// Runs `script` with `nft -f -` as one transaction, for `operation` on `table`.
    pub fn run(&self, table: &str, operation: &'static str, script: &str) -> Result<(), NftError> {
        self.output(&format!("table inet {table}"), operation, &["-f", "-"], Some(script)).map(|_| ())
    }

    /// `nft -j list table inet <table>`: the table's JSON listing, or `None` when there is no
    /// such table.
    pub fn list_table_json(&self, table: &str) -> Result<Option<String>, NftError> {
        match self.output(&format!("table inet {table}"), "list", &["-j", "list", "table", "inet", table], None) {
            Ok(out) => Ok(Some(out)),
            Err(err) if err.is_no_such_table() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `nft -j list ruleset`: every table of every family, as JSON (rule handles included).
    pub fn list_ruleset_json(&self) -> Result<String, NftError> {
        self.output("ruleset", "list", &["-j", "list", "ruleset"], None)
    }

    /// Runs `script` with `nft -f -` as one transaction, on any tables: `operation` names it
    /// in an error.
    pub fn run_on_ruleset(&self, operation: &'static str, script: &str) -> Result<(), NftError> {
        self.output("ruleset", operation, &["-f", "-"], Some(script)).map(|_| ())
    }

    /// The digest recorded in the table's digest set (`state_digest`); `None` when there is no such table or
    /// set (another version's table), or it holds none.
    pub fn recorded_digest(&self, table: &str) -> Option<u64> {
        let subject = format!("table inet {table}");
        let listing = self.output(&subject, "read digest", &["list", "set", "inet", table, DIGEST_SET], None).ok()?;
        parse_digest(&listing)
    }

    /// Deletes the table `table` of family `inet`, with all its sets and chains; nothing else is
    /// touched. Deleting a table that is not there succeeds.
    pub fn delete_table(&self, table: &str) -> Result<(), NftError> {
        match self.run(table, "delete", &delete_table_script(table)) {
            Err(err) if err.is_no_such_table() => Ok(()),
            other => other,
        }
    }

    fn output(
        &self,
        table: &str,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NftError> {
        let spawn_error = |source| NftError::Spawn {
            table: table.to_string(),
            operation,
            program: self.program.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        remember(&WRITERS, child.id());
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        if !out.status.success() {
            return Err(NftError::Refused {
                table: table.to_string(),
                operation,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The proxy's table, kept in step with a [`FilterState`]: the skeleton once, then only element
/// changes. Remembers what the kernel holds, so an update that changes no element runs nothing.
/// Every write also records the digest (skeleton and elements, FNV-1a) of the result, so that a restart finding the
/// table as it wants it adopts it without a write.
#[derive(Debug)]
pub struct Netfilter {
    nft: Nft,
    config: FilterConfig,
    /// What the sets hold, as far as this process knows.
    applied: FilterState,
    /// The digest of each set of `applied`.
    digests: SetDigests,
    /// Whether the last write failed, so the kernel may differ from `applied`.
    dirty: bool,
    /// The digest found in the kernel at start, until the first [`Netfilter::resync`] uses it.
    recorded: Option<u64>,
    /// Whether the skeleton is still to be written (deferred at start, in case it is adopted).
    skeleton_pending: bool,
    /// The digest of `config` and `applied`, when not `dirty`.
    digest: u64,
    /// Element transactions go over nfnetlink, not through `nft`: opened at the first, again
    /// after the socket failed.
    elements: Option<ElementSocket>,
    /// Once the first whole write (or the adoption) is done: the nftables generation read right
    /// after it, `None` inside when it could not be read.
    settled: Option<Option<u32>>,
}

impl std::fmt::Debug for ElementSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ElementSocket")
    }
}

impl Netfilter {
    /// Creates the skeleton, or adopts the table if it is already there (its elements are kept
    /// until the first [`Netfilter::resync`]). A table that records a digest is left untouched
    /// until that resync, which writes nothing when the digest is the desired state's. A table
    /// of another shape (another version's) is deleted and made anew.
    pub fn start(nft: Nft, config: FilterConfig) -> Result<Netfilter, NftError> {
        let script = skeleton_script(&config)
            .ok_or_else(|| NftError::MarkBit { table: config.table.clone(), bit: config.masquerade_bit })?;
        let recorded = nft.recorded_digest(&config.table);
        if recorded.is_none()
            && let Err(first) = nft.run(&config.table, "create skeleton", &script)
        {
            tracing::warn!(error = %first, "nftables table not adoptable; recreating it");
            nft.delete_table(&config.table)?;
            nft.run(&config.table, "create skeleton", &script)?;
        }
        // Adopted elements are unknown: the first resync compares digests or rewrites the sets.
        Ok(Netfilter {
            nft,
            config,
            applied: FilterState::new(),
            digests: SetDigests::default(),
            dirty: true,
            skeleton_pending: recorded.is_some(),
            recorded,
            digest: 0,
            elements: None,
            settled: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// What the sets hold, as far as this process knows.
    pub fn applied(&self) -> &FilterState {
        &self.applied
    }

    /// What the sets hold when this process knows it: `None` before the first
    /// [`Netfilter::resync`] and after a failed write (the next resync rewrites the sets whole).
    pub fn known(&self) -> Option<&FilterState> {
        (!self.dirty).then_some(&self.applied)
    }

    /// Sets or removes the filters of the given virtual servers and writes the element changes
    /// in one transaction; returns how many elements were added or deleted. Writes nothing when
    /// no element changes. After a failed write the sets are rewritten whole.
    pub fn update(
        &mut self,
        entries: impl IntoIterator<Item = (Target, Option<ServiceFilter>)>,
    ) -> Result<usize, NftError> {
        let changes = self.applied.update(entries);
        self.digests.count(&changes);
        if self.dirty {
            let desired = self.applied.clone();
            return self.resync(desired).map(|()| changes.len());
        }
        self.write(&changes)
    }

    /// Makes the sets hold exactly `desired`: only the differences when this process knows what
    /// the kernel holds; at start nothing when the table records the digest of `desired`; else
    /// (at start, after a failure, after [`Netfilter::forget`]) a flush and refill in one
    /// transaction.
    pub fn resync(&mut self, desired: FilterState) -> Result<(), NftError> {
        if !self.dirty {
            let changes = self.applied.diff(&desired);
            self.digests.count(&changes);
            self.applied = desired;
            return self.write(&changes).map(|_| ());
        }
        let table = self.config.table.clone();
        let mark_bit = |bit| NftError::MarkBit { table: table.clone(), bit };
        let digest = table_digest(&self.config, &desired).ok_or_else(|| mark_bit(self.config.masquerade_bit))?;
        let recorded = self.recorded.take();
        if self.skeleton_pending {
            if recorded == Some(digest) {
                tracing::info!(table = %table, digest = format!("{digest:#018x}"), "nftables: adopted the table unchanged, no write");
                self.digests = SetDigests::of(&desired);
                self.applied = desired;
                self.digest = digest;
                self.skeleton_pending = false;
                self.dirty = false;
                self.settle();
                return Ok(());
            }
            // The chains and rules with `nft` (a few dozen lines, at start only); the elements,
            // tens of thousands at scale, over nfnetlink right after.
            let skeleton = skeleton_script(&self.config).ok_or_else(|| mark_bit(self.config.masquerade_bit))?;
            if let Err(first) = self.nft.run(&table, "create skeleton", &skeleton) {
                tracing::warn!(error = %first, "nftables table not adoptable; recreating it");
                self.nft.delete_table(&table)?;
                self.nft.run(&table, "create skeleton", &skeleton)?;
            }
            self.skeleton_pending = false;
        }
        let mut transaction = Transaction::new(&table);
        transaction.flush_sets();
        transaction.add(desired.elements());
        transaction.digest(digest);
        self.digests = SetDigests::of(&desired);
        self.applied = desired;
        self.run_elements(transaction, "rewrite sets")?;
        self.digest = digest;
        self.dirty = false;
        self.settle();
        Ok(())
    }

    /// Once the first whole write (or the adoption of the table as it was) is done: the
    /// nftables generation read right after it (`None` inside when it could not be read). A
    /// table monitor that subscribes later and then reads the same generation knows that no
    /// transaction, anyone's, came in between; so it need not listen while the first write
    /// announces its tens of thousands of elements (each notification built in the kernel
    /// during the commit: 2.9 s against 0.8 s of the cold start's nftables write at 10,000
    /// Services, `benches/RESULTS.md`).
    pub fn settled_generation(&self) -> Option<Option<u32>> {
        self.settled
    }

    fn settle(&mut self) {
        if self.settled.is_none() {
            let generation = with_socket(&mut self.elements, ElementSocket::generation);
            if let Err(e) = &generation {
                tracing::warn!(error = e as &dyn std::error::Error, "cannot read the nftables generation");
            }
            self.settled = Some(generation.ok());
        }
    }

    /// Replaces the table whole, chains and rules included, with one holding `desired`, in one
    /// transaction (no moment without it): the repair after someone else edited the table, which
    /// a rewrite of the sets alone would not undo if a rule or chain was touched.
    pub fn rebuild(&mut self, desired: FilterState) -> Result<(), NftError> {
        let table = self.config.table.clone();
        let mark_bit = |bit| NftError::MarkBit { table: table.clone(), bit };
        let digest = table_digest(&self.config, &desired).ok_or_else(|| mark_bit(self.config.masquerade_bit))?;
        let skeleton = skeleton_script(&self.config).ok_or_else(|| mark_bit(self.config.masquerade_bit))?;
        // `add` first, so that the `delete` finds a table even if someone deleted it.
        let script = format!("add table inet {table}\ndelete table inet {table}\n{skeleton}")
            + &full_script(&table, &desired)
            + &digest_script(&table, digest);
        self.dirty = true;
        self.digests = SetDigests::of(&desired);
        self.applied = desired;
        self.nft.run(&table, "rebuild", &script)?;
        self.skeleton_pending = false;
        self.recorded = None;
        self.digest = digest;
        self.dirty = false;
        self.settle();
        Ok(())
    }

    /// Marks the kernel's sets as unknown, so the next [`Netfilter::resync`] rewrites them whole
    /// (for a caller that learns the kernel may differ; edits of the table by others are
    /// repaired with [`Netfilter::rebuild`], which also restores chains and rules).
    pub fn forget(&mut self) {
        self.dirty = true;
    }

    /// The names of the sets whose elements change (both families), in a fixed order.
    pub fn element_sets() -> Vec<String> {
        crate::script::FAMILY_SUFFIXES
            .iter()
            .flat_map(|suffix| {
                crate::script::ELEMENT_SETS
                    .iter()
                    .chain(&crate::script::ELEMENT_MAPS)
                    .map(move |set| format!("{set}_{suffix}"))
            })
            .collect()
    }

    /// The digest of set `set` as applied (see [`crate::SetReader::digest`], which reads the
    /// kernel's): equal digests mean equal sets. `None` while what the kernel holds is
    /// unknown (after a failed write, until the next [`Netfilter::resync`] rewrites the sets).
    pub fn set_digest(&self, set: &str) -> Option<u64> {
        (!self.dirty).then(|| self.digests.get(set))
    }

    /// Compares every element set with what the kernel holds ([`Netfilter::verify_set`] for
    /// each); returns how many elements it wrote.
    pub fn verify_sets(&mut self) -> Result<usize, NftError> {
        let mut written = 0;
        for set in Netfilter::element_sets() {
            written += self.verify_set(&set)?;
        }
        Ok(written)
    }

    /// Compares element set `set` (one of [`Netfilter::element_sets`]) with what the kernel
    /// holds (one listing) and writes the difference in one transaction: what someone deleted
    /// is added back, what someone added is deleted. Returns how many elements it wrote.
    /// Nothing when the sets are unknown (after a failure the next [`Netfilter::resync`]
    /// rewrites them whole anyway).
    pub fn verify_set(&mut self, set: &str) -> Result<usize, NftError> {
        if self.dirty {
            return Ok(0);
        }
        let table = self.config.table.clone();
        let error = |source| NftError::Elements { table: table.clone(), operation: "list a set", source };
        let want: HashSet<ElementBytes> =
            self.applied.elements().filter(|e| crate::script::in_set(e, set)).map(element_bytes).collect();
        let listed = with_socket(&mut self.elements, |socket| socket.list(&table, set));
        let listed: HashSet<ElementBytes> = listed.map_err(error)?.into_iter().collect();
        let extra: Vec<ElementBytes> = listed.difference(&want).cloned().collect();
        let missing: Vec<ElementBytes> = want.difference(&listed).cloned().collect();
        if extra.is_empty() && missing.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            set,
            missing = missing.len(),
            extra = extra.len(),
            "nftables set differs from what was written; repairing"
        );
        let written = extra.len() + missing.len();
        let mut transaction = Transaction::new(&table);
        transaction.raw("delete", set, extra);
        transaction.raw("add", set, missing);
        self.run_elements(transaction, "repair a set")?;
        Ok(written)
    }

    /// Runs an element transaction over nfnetlink (this process is its writer, as the table
    /// monitor sees it).
    fn run_elements(&mut self, transaction: Transaction, operation: &'static str) -> Result<(), NftError> {
        let table = self.config.table.clone();
        let error = |source| NftError::Elements { table: table.clone(), operation, source };
        with_socket(&mut self.elements, |socket| socket.run(transaction, operation)).map_err(error)
    }

    fn write(&mut self, changes: &ElementChanges) -> Result<usize, NftError> {
        if changes.is_empty() {
            return Ok(0);
        }
        let digest = changes_digest(self.digest, changes);
        let mut transaction = Transaction::new(&self.config.table);
        transaction.changes(changes);
        transaction.digest(digest);
        match self.run_elements(transaction, "update sets") {
            Ok(()) => {
                self.digest = digest;
                Ok(changes.len())
            }
            Err(err) => {
                // A delete of a missing element refuses the whole transaction: the kernel
                // differs from what this process believes, so rewrite the sets whole.
                tracing::warn!(error = %err, "nftables update refused; rewriting the sets");
                self.dirty = true;
                let desired = self.applied.clone();
                self.resync(desired).map(|()| changes.len())
            }
        }
    }
}
