//! Whether the kernel keeps estimating IPVS rates (`net.ipv4.vs.run_estimation`).

/// What to do with the kernel's IPVS rate estimation (`--ipvs-rate-estimation`).
///
/// Before Linux 6.2 a timer walks every virtual and real server's rate estimator every 2 s, in
/// a softirq, under a lock that adding or deleting a real server also takes: at 100,000 real
/// servers each walk held the CPU it ran on, and any write waiting for it, for tens of
/// milliseconds (see `benches/RESULTS.md`). 6.2 moved estimation to kernel threads. Off, the
/// rates `ipvsadm --rate` shows stay zero, and before 6.2 the counters `ipvsadm --stats` shows
/// stop too (the same timer sums them): an operator's choice, not a default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RateEstimation {
    /// Left as the node has it.
    #[default]
    Keep,
    /// Off on kernels before 6.2, left alone from 6.2 on.
    Auto,
    /// Always off.
    Off,
}
