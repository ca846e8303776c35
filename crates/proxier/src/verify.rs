//! Verification of what the kernel holds, spread over time and read beside the sync loop.
//!
//! The loop trusts its record of what it applied; this task checks that record against the
//! kernel, so that what someone else deleted or altered is repaired, without one whole-table
//! burst per period. Every tick (a second) it reads the kernel's count of IPv4 virtual servers,
//! in O(1), and the real servers of a slice of the virtual servers, so that all of them are read
//! once per round (`realServerVerifyPeriod`, 5 minutes by default); at the start of each round
//! the dummy link's addresses and the list of virtual servers (one dump, without their real
//! servers); and every `syncPeriod` the digest of one nftables set, in turn (the loop compares
//! it with what it applied in O(1), and reads the set itself only when they differ). A count
//! that differs from the loop's record has the list read at the next tick: a virtual server
//! someone deletes is back within seconds, where a list every `syncPeriod` cost 10,000 entries
//! a time (the kernel restarting its walk of the table for each datagram) to find nothing. The
//! kernel counts no IPv6 virtual servers: while the record holds any, the loop has the list
//! read every `syncPeriod`, as before.
//!
//! It reads on sockets of its own and hands each read to the loop, which takes it in between
//! syncs: a change never waits for a verification. A read races the loop's writes, so each
//! carries the loop's write clock as it began, and the loop ignores what it wrote since (the
//! next round sees it).

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs::{RealServerEntry, VirtualServer, VirtualServerId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::kernel::KernelError;

/// How often the real servers of the next slice are read: often enough that a slice is small,
/// seldom enough that an idle node sleeps.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The kernel reads the verification makes, on sockets of their own (not the loop's).
pub trait KernelReader: Send + 'static {
    /// Every virtual server's configuration, without its real servers (one dump); `expected`
    /// is about how many there are (room to make for them).
    fn virtual_servers(
        &mut self,
        expected: usize,
    ) -> impl Future<Output = Result<Vec<VirtualServer>, KernelError>> + Send;

    /// How many IPv4 virtual servers the kernel holds (anyone's), without listing them; `None`
    /// when this reader cannot count (the list is then read every `syncPeriod` instead).
    fn virtual_server_count(&mut self) -> impl Future<Output = Result<Option<usize>, KernelError>> + Send {
        async { Ok(None) }
    }

    /// The real servers of `vs`, or `None` if `vs` is gone (the kernel's dump of the real
    /// servers of a missing virtual server is as empty as that of one without any).
    fn real_servers(
        &mut self,
        vs: &VirtualServerId,
    ) -> impl Future<Output = Result<Option<Vec<RealServerEntry>>, KernelError>> + Send;

    /// The addresses bound on the dummy link.
    fn addresses(&mut self) -> impl Future<Output = Result<Vec<IpAddr>, KernelError>> + Send;

    /// The name and digest (as the kernel holds it: see `netfilter::SetReader`) of the `n`th
    /// nftables element set, counting round the sets; `None` when the reader reads no sets.
    fn filter_set(&mut self, n: usize) -> impl Future<Output = Result<Option<(String, u64)>, KernelError>> + Send {
        let _ = n;
        async { Ok(None) }
    }
}

/// How often what is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySettings {
    /// `syncPeriod`: a virtual server deleted by someone else is made again within it (the
    /// count notices it within a tick; without a count the list is read this often), and the
    /// loop's verification sync (graceful removals, nftables set digests) runs this often.
    pub virtual_servers: Duration,
    /// Every virtual server's real servers, the dummy link's addresses and the list of
    /// virtual servers are read once this often.
    pub real_servers: Duration,
}

/// One read, with the loop's write clock as it began.
#[derive(Debug)]
pub(crate) struct Reading {
    pub started: u64,
    pub read: Read,
}

/// What was read.
#[derive(Debug)]
pub(crate) enum Read {
    VirtualServers(Vec<VirtualServer>),
    RealServers(Vec<(VirtualServerId, Option<Vec<RealServerEntry>>)>),
    /// The real servers of the virtual servers with graceful removals pending, read to count
    /// their connections (every `syncPeriod`).
    Counted(Vec<(VirtualServerId, Option<Vec<RealServerEntry>>)>),
    Addresses(Vec<IpAddr>),
    /// The digest of an nftables set, by name.
    FilterSet(String, u64),
    /// How many virtual servers the kernel holds.
    Count(usize),
    /// A `settings.virtual_servers` period passed: the loop's verification sync is due.
    Period,
    Failed(KernelError),
}

/// The loop's write clock: odd while a sync writes, advanced before and after. A read that
/// began at `t` cannot vouch for anything written at `t` or later.
#[derive(Debug, Default)]
pub(crate) struct WriteClock(AtomicU64);

impl WriteClock {
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// How many virtual servers one tick reads so that `total` are read once per `round`.
pub(crate) fn slice_len(total: usize, tick: Duration, round: Duration) -> usize {
    if total == 0 {
        return 0;
    }
    let ticks = (round.as_secs_f64() / tick.as_secs_f64()).floor().max(1.0);
    ((total as f64 / ticks).ceil() as usize).clamp(1, total)
}

/// Reads forever with `reader`, starting from the virtual servers `ids` (what the adopting
/// sync found), and sends each read to the loop; returns when the loop is gone.
///
/// Every tick the kernel's count of virtual servers (O(1)); the list of them all only when the
/// loop found that count to differ from its record (`list_wanted`; at most once a
/// `settings.virtual_servers`), at the start of each round (`settings.real_servers`) whatever
/// the counts said (a virtual server deleted while another was added, or one reconfigured; and
/// the round's ids are the list's), and every `settings.virtual_servers` when the reader
/// cannot count.
pub(crate) async fn verify<R: KernelReader>(
    mut reader: R,
    settings: VerifySettings,
    clock: Arc<WriteClock>,
    mut ids: Vec<VirtualServerId>,
    shared: Arc<TaskShared>,
    to_loop: mpsc::Sender<Reading>,
) {
    let mut cursor = 0;
    let mut sets = 0;
    let mut counting = true;
    // The adopting sync listed them all just now.
    let mut last_list = Instant::now();
    let mut last_wanted_list: Option<Instant> = None;
    let mut next_period = Instant::now() + settings.virtual_servers;
    let mut next_tick = Instant::now() + TICK;
    loop {
        tokio::time::sleep_until(next_period.min(next_tick)).await;
        let now = Instant::now();
        let mut reads = Vec::new();
        let period = now >= next_period;
        let tick = now >= next_tick;
        let wanted = shared.list_wanted.load(Ordering::Acquire)
            && last_wanted_list.is_none_or(|at| now - at >= settings.virtual_servers);
        // Each round starts with the list (the ids it reads include what was added since),
        // unless one was read within the period.
        let round_due = tick && cursor == 0 && now - last_list >= settings.virtual_servers;
        if wanted || round_due || (period && !counting) {
            shared.list_wanted.store(false, Ordering::Release);
            if wanted {
                last_wanted_list = Some(now);
            }
            last_list = now;
            let started = clock.now();
            // Room for what the last list found and a few more: no vector grown by doubling.
            let expected = ids.len() + ids.len() / 64 + 16;
            let read = match reader.virtual_servers(expected).await {
                Ok(list) => {
                    ids.clear();
                    ids.extend(list.iter().map(|s| s.id));
                    cursor = cursor.min(ids.len());
                    Read::VirtualServers(list)
                }
                Err(e) => Read::Failed(e),
            };
            reads.push(Reading { started, read });
        }
        if period {
            // Connections of the real servers being removed gracefully: counted here, off the
            // loop (hundreds of reads under churn), and deleted by the loop when idle.
            let pending: Vec<VirtualServerId> = shared.pending.lock().map(|p| p.clone()).unwrap_or_default();
            if !pending.is_empty() {
                let started = clock.now();
                let read = read_real_servers(&mut reader, &pending).await.map_or_else(Read::Failed, Read::Counted);
                reads.push(Reading { started, read });
            }
            let started = clock.now();
            match reader.filter_set(sets).await {
                Ok(Some((set, digest))) => reads.push(Reading { started, read: Read::FilterSet(set, digest) }),
                Ok(None) => {}
                Err(e) => reads.push(Reading { started, read: Read::Failed(e) }),
            }
            sets = sets.wrapping_add(1);
            reads.push(Reading { started: clock.now(), read: Read::Period });
            next_period = Instant::now() + settings.virtual_servers;
        }
        if tick {
            if counting {
                let started = clock.now();
                match reader.virtual_server_count().await {
                    Ok(Some(n)) => reads.push(Reading { started, read: Read::Count(n) }),
                    Ok(None) => counting = false,
                    Err(e) => {
                        // Reported once; from then on the list every period sees what a count
                        // would have, rather than a failure a second.
                        counting = false;
                        reads.push(Reading { started, read: Read::Failed(e) });
                    }
                }
            }
            if cursor == 0 {
                let started = clock.now();
                let read = reader.addresses().await.map_or_else(Read::Failed, Read::Addresses);
                reads.push(Reading { started, read });
            }
            let n = slice_len(ids.len(), TICK, settings.real_servers);
            let slice = &ids[cursor..(cursor + n).min(ids.len())];
            cursor = if cursor + n >= ids.len() { 0 } else { cursor + n };
            if !slice.is_empty() {
                let started = clock.now();
                let read = read_real_servers(&mut reader, slice).await.map_or_else(Read::Failed, Read::RealServers);
                reads.push(Reading { started, read });
            }
            next_tick = Instant::now() + TICK;
        }
        for reading in reads {
            if to_loop.send(reading).await.is_err() {
                return;
            }
        }
    }
}

/// What the loop and the task share besides the reads.
#[derive(Debug, Default)]
pub(crate) struct TaskShared {
    /// The virtual servers with graceful removals pending, whose connections the task counts.
    pub pending: Mutex<Vec<VirtualServerId>>,
    /// Set by the loop when a count differed from its record: the task lists them all.
    pub list_wanted: AtomicBool,
}

/// The real servers of each of `ids` (`None`: the virtual server is gone); the first failure
/// ends the read.
async fn read_real_servers<R: KernelReader>(
    reader: &mut R,
    ids: &[VirtualServerId],
) -> Result<Vec<(VirtualServerId, Option<Vec<RealServerEntry>>)>, KernelError> {
    let mut reads = Vec::with_capacity(ids.len());
    for id in ids {
        reads.push((*id, reader.real_servers(id).await?));
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_virtual_server_once_per_round() {
        let s = Duration::from_secs;
        // (virtual servers, round, expected slice)
        let cases: &[(usize, u64, usize)] = &[
            (0, 300, 0),
            (1, 300, 1),
            (10_000, 300, 34),
            (300, 300, 1),
            (301, 300, 2),
            // A round shorter than a tick reads everything each tick.
            (50, 0, 50),
        ];
        for (total, round, want) in cases {
            assert_eq!(slice_len(*total, TICK, s(*round)), *want, "{total} in {round} s");
            if *total > 0 {
                let ticks = total.div_ceil(*want) as u64;
                assert!(ticks <= (*round).max(1), "{total} in {round} s takes {ticks} ticks");
            }
        }
    }
}
