//! Verification of what the kernel holds, spread over time and read beside the sync loop.
//!
//! The loop trusts its record of what it applied; this task checks that record against the
//! kernel, so that what someone else deleted or altered is repaired, without one whole-table
//! burst per period: every `syncPeriod` the list of virtual servers (one dump, without their
//! real servers), and every tick the real servers of a slice of the virtual servers, so that all
//! of them are read once per round (`realServerVerifyPeriod`, 5 minutes by default), with the
//! dummy link's addresses read at the start of each round. It reads on sockets of its own and
//! hands each read to the loop, which takes it in between syncs: a change never waits for a
//! verification. A read races the loop's writes, so each carries the loop's write clock as it
//! began, and the loop ignores what it wrote since (the next round sees it).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipvs::{RealServerEntry, VirtualServerEntry, VirtualServerId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::kernel::KernelError;

/// How often the real servers of the next slice are read: often enough that a slice is small,
/// seldom enough that an idle node sleeps.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The kernel reads the verification makes, on sockets of their own (not the loop's).
pub trait KernelReader: Send + 'static {
    /// Every virtual server, without its real servers (one dump).
    fn virtual_servers(&mut self) -> impl Future<Output = Result<Vec<VirtualServerEntry>, KernelError>> + Send;

    /// The real servers of `vs`, or `None` if `vs` is gone (the kernel's dump of the real
    /// servers of a missing virtual server is as empty as that of one without any).
    fn real_servers(
        &mut self,
        vs: &VirtualServerId,
    ) -> impl Future<Output = Result<Option<Vec<RealServerEntry>>, KernelError>> + Send;

    /// The addresses bound on the dummy link.
    fn addresses(&mut self) -> impl Future<Output = Result<Vec<IpAddr>, KernelError>> + Send;
}

/// How often what is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySettings {
    /// The list of virtual servers is read this often (`syncPeriod`): one deleted by someone
    /// else is made again within it.
    pub virtual_servers: Duration,
    /// Every virtual server's real servers, and the dummy link's addresses, are read once
    /// this often.
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
    VirtualServers(Vec<VirtualServerEntry>),
    RealServers(Vec<(VirtualServerId, Option<Vec<RealServerEntry>>)>),
    Addresses(Vec<IpAddr>),
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
pub(crate) async fn verify<R: KernelReader>(
    mut reader: R,
    settings: VerifySettings,
    clock: Arc<WriteClock>,
    mut ids: Vec<VirtualServerId>,
    to_loop: mpsc::Sender<Reading>,
) {
    let mut cursor = 0;
    let mut next_list = Instant::now() + settings.virtual_servers;
    let mut next_tick = Instant::now() + TICK;
    loop {
        tokio::time::sleep_until(next_list.min(next_tick)).await;
        let started = clock.now();
        let read = if Instant::now() >= next_list {
            let read = match reader.virtual_servers().await {
                Ok(list) => {
                    ids = list.iter().map(|e| e.server.id).collect();
                    cursor = cursor.min(ids.len());
                    Read::VirtualServers(list)
                }
                Err(e) => Read::Failed(e),
            };
            next_list = Instant::now() + settings.virtual_servers;
            read
        } else {
            let read = if cursor == 0 {
                match reader.addresses().await {
                    Ok(addrs) => Some(Read::Addresses(addrs)),
                    Err(e) => Some(Read::Failed(e)),
                }
            } else {
                None
            };
            let n = slice_len(ids.len(), TICK, settings.real_servers);
            let slice = &ids[cursor..(cursor + n).min(ids.len())];
            cursor = if cursor + n >= ids.len() { 0 } else { cursor + n };
            let mut reads = Vec::with_capacity(slice.len());
            let mut failed = None;
            for id in slice {
                match reader.real_servers(id).await {
                    Ok(dests) => reads.push((*id, dests)),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            next_tick = Instant::now() + TICK;
            if let Some(read) = read
                && to_loop.send(Reading { started, read }).await.is_err()
            {
                return;
            }
            match failed {
                Some(e) => Read::Failed(e),
                None if reads.is_empty() => continue,
                None => Read::RealServers(reads),
            }
        };
        if to_loop.send(Reading { started, read }).await.is_err() {
            return;
        }
    }
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
