//! The VM's own stalls, measured beside the daemon (the scale bench): a thread that sleeps 2 ms
//! at a time and records each wake-up that comes late. A late wake-up means the VM could not
//! run a ready thread for that long (its vCPU held by the host, or by the guest kernel with
//! preemption off, as a softirq does), which holds up the daemon, its API server and the
//! bench's own polling alike. It tells a change's latency spent waiting for the VM from the
//! latency the daemon adds. Its cost is a wake-up every 2 ms (about 1% of a vCPU under TCG).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How long the probe sleeps between wake-ups.
const PERIOD: Duration = Duration::from_millis(2);
/// Lateness under this is the timer's and scheduler's ordinary slack, not a stall.
const RECORDED: Duration = Duration::from_millis(5);

/// The probe's thread, running until [`StallProbe::finish`].
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Stalls>,
}

/// The late wake-ups a probe recorded, and how many it had in all.
#[derive(Debug, Default)]
pub struct Stalls {
    /// When each late wake-up was due, and how late it came.
    late: Vec<(SystemTime, Duration)>,
    wakeups: u64,
}

impl StallProbe {
    /// Starts the probe's thread.
    pub fn start() -> StallProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut stalls = Stalls::default();
            while !running.load(Ordering::Relaxed) {
                let due = Instant::now() + PERIOD;
                let due_wall = SystemTime::now() + PERIOD;
                std::thread::sleep(PERIOD);
                stalls.wakeups += 1;
                let late = Instant::now().saturating_duration_since(due);
                if late >= RECORDED {
                    stalls.late.push((due_wall, late));
                }
            }
            stalls
        });
        StallProbe { stop, thread }
    }

    /// Stops the probe; what it recorded.
    pub fn finish(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Stalls {
    /// How many wake-ups came later than `by`.
    fn count_over(&self, by: Duration) -> usize {
        self.late.iter().filter(|(_, late)| *late > by).count()
    }

    /// One line: how often and how long the VM stalled (`late by over 10 ms 12 times, ...`).
    pub fn summary(&self) -> String {
        let longest = self.late.iter().map(|(_, late)| *late).max().unwrap_or_default();
        format!(
            "{} wake-ups; late by over 10 ms {} times, over 25 ms {}, over 50 ms {}; the longest {longest:.2?}",
            self.wakeups,
            self.count_over(Duration::from_millis(10)),
            self.count_over(Duration::from_millis(25)),
            self.count_over(Duration::from_millis(50)),
        )
    }

    /// The stalls overlapping `from..to`: their time within it, and the longest of them.
    pub fn within(&self, from: SystemTime, to: SystemTime) -> (Duration, Duration) {
        let mut total = Duration::ZERO;
        let mut longest = Duration::ZERO;
        for (due, late) in &self.late {
            let end = *due + *late;
            let (start, stop) = ((*due).max(from), end.min(to));
            if let Ok(overlap) = stop.duration_since(start) {
                total += overlap;
                longest = longest.max(*late);
            }
        }
        (total, longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the part of a stall inside the window counts; stalls outside it do not.
    #[test]
    fn a_stall_counts_for_its_overlap_with_the_window() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ms = Duration::from_millis;
        let stalls = Stalls { late: vec![(t0, ms(30)), (t0 + ms(100), ms(20)), (t0 + ms(500), ms(60))], wakeups: 300 };
        assert_eq!(stalls.within(t0 + ms(10), t0 + ms(110)), (ms(20) + ms(10), ms(30)));
        assert_eq!(stalls.within(t0 + ms(200), t0 + ms(400)), (Duration::ZERO, Duration::ZERO));
        assert_eq!(stalls.count_over(ms(25)), 2);
        assert!(stalls.summary().starts_with("300 wake-ups; late by over 10 ms 3 times, over 25 ms 2, over 50 ms 1"));
    }
}
