//! What the scale benches share: the cluster's objects, the cold start measured against the
//! kernel, the peer, and reading a process's memory and CPU time.

#![allow(dead_code)] // each bench uses its part

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::daemon_support::{Cluster, Daemon};
pub use crate::daemon_support::{cluster_ip, endpoint_ip, service, slice};
use integration::{Stalls, in_netns, ip, ipvsadm, ipvsadm_restore};
use ipvs::{Protocol, VirtualServerId};

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn vs_id(i: usize) -> VirtualServerId {
    VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: IpAddr::V4(cluster_ip(i)), port: 80 }
}

/// Virtual and real servers in the kernel now.
async fn kernel_counts(client: &ipvs::Client) -> (usize, usize) {
    match client.table().await {
        Ok(table) => (table.services.len(), table.services.iter().map(|(_, reals)| reals.len()).sum()),
        Err(_) => (0, 0),
    }
}

/// Prints where the slowest changes' time went, from the daemon's log: the sync that wrote
/// each change (the first incremental sync naming its Service after it was committed) began
/// and ended at its line's time less its duration. So a change's latency splits into the wait
/// before its sync (the watch's delivery and the feed to the model, then its queueing, which
/// the daemon logs as `queued`: the loop busy or not scheduled),
/// the sync itself, and the bench's seeing it (its 1 ms polling).
/// `stalls` adds, for each, how long the VM itself stalled within it.
pub fn attribute_slowest(sorted: &[(Duration, usize, std::time::SystemTime)], log: &str, stalls: &Stalls) {
    use k8s_openapi::jiff::Timestamp;
    // Every sync the daemon logged: when it ended, its line, how long it took.
    let syncs: Vec<(Timestamp, &str, Duration)> = log
        .lines()
        .filter(|l| l.contains(" sync: ") && !l.contains("sync phases"))
        .filter_map(|l| {
            let at: Timestamp = l.split_whitespace().next()?.parse().ok()?;
            let took = parse_duration(l.rsplit(" in ").next()?)?;
            Some((at, l, took))
        })
        .collect();
    for (latency, i, committed_wall) in sorted.iter().rev().take(12) {
        let Ok(committed) = Timestamp::try_from(*committed_wall) else { continue };
        let (stalled, longest) = stalls.within(*committed_wall, *committed_wall + *latency);
        let stalled = format!("; the VM stalled {stalled:.2?} within it (longest {longest:.2?})");
        let name = format!("bench/svc-{i}");
        let names = |line: &str| {
            line.match_indices(&name).any(|(at, _)| !line[at + name.len()..].starts_with(|c: char| c.is_ascii_digit()))
        };
        let found = syncs
            .iter()
            .position(|(at, line, _)| *at >= committed && line.contains("incremental sync:") && names(line));
        match found {
            Some(n) => {
                let (at, line, took) = syncs[n];
                let ended = at.duration_since(committed).unsigned_abs();
                let began = ended.saturating_sub(took);
                let steps = line.split("incremental sync: ").nth(1).and_then(|r| r.split(", 0 failed").next());
                // What the loop did just before: a long sync there is what the change waited for.
                let before = n.checked_sub(1).map(|p| syncs[p]).map_or(String::new(), |(at, line, took)| {
                    let kind = line.split(" sync: ").next().and_then(|h| h.rsplit(' ').next()).unwrap_or("?");
                    let end = at.duration_since(committed);
                    let end_ms = end.as_secs_f64() * 1e3;
                    format!("; the sync before it: {kind}, took {took:.2?}, ended {end_ms:+.1} ms from the commit")
                });
                // The daemon says how long the change waited once fed to the model: the rest of
                // the wait was its way there (the API server's watch, the decoding, the feed).
                let queued = line
                    .split(", queued ")
                    .nth(1)
                    .and_then(|r| r.split(',').next())
                    .and_then(parse_duration)
                    .unwrap_or_default();
                println!(
                    "slowest   {latency:>9.2?}: fed {:.2?} after the commit, queued {queued:.2?}, its sync took {took:.2?}, seen {:.2?} after it ({}){before}{stalled}",
                    began.saturating_sub(queued),
                    latency.saturating_sub(ended),
                    steps.unwrap_or("?"),
                );
            }
            None => println!("slowest   {latency:>9.2?}: no incremental sync naming svc-{i} found in the log{stalled}"),
        }
    }
}

/// A duration as the daemon's log prints it (`Debug`: `12.345ms`, `850.000µs`, `1.2s`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let secs = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1e3
    } else if let Some(us) = text.strip_suffix("µs") {
        us.parse::<f64>().ok()? / 1e6
    } else if let Some(ns) = text.strip_suffix("ns") {
        ns.parse::<f64>().ok()? / 1e9
    } else {
        text.strip_suffix('s')?.parse().ok()?
    };
    Some(Duration::from_secs_f64(secs))
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The peer, in a fresh network namespace of its own: the same rules through `ipvsadm -R`, the
/// same addresses through `ip -batch`. Its own namespace because IPVS keeps deleted real servers
/// in a per-namespace trash list for minutes and scans it on every add: sharing one namespace,
/// whichever side ran second would pay for the other's 100,000 deleted real servers (see
/// `kernel_ops`).
pub fn peer(services: usize, per_service: usize) -> (Duration, Duration) {
    in_netns(move || async move {
        let ipvs = ipvs::Client::connect().await.expect("IPVS netlink");
        let mut rules = String::new();
        let mut addresses = String::new();
        for i in 0..services {
            rules.push_str(&format!("-A -t {}:80 -s rr\n", cluster_ip(i)));
            for j in 0..per_service {
                rules.push_str(&format!("-a -t {}:80 -r {}:8080 -m -w 1\n", cluster_ip(i), endpoint_ip(i, j, 0)));
            }
            addresses.push_str(&format!("addr add {}/32 dev peer-ipvs0\n", cluster_ip(i)));
        }
        ip(&["link", "add", "peer-ipvs0", "type", "dummy"]).unwrap();
        // The same rate estimation as the daemon's namespace (a setting of each namespace).
        run_estimation_from_env();
        let start = Instant::now();
        ipvsadm_restore(&rules).unwrap();
        let restore = start.elapsed();
        let start = Instant::now();
        integration::run("ip", &["-batch", "-"], Some(&addresses)).unwrap();
        let bind = start.elapsed();
        assert_eq!(kernel_counts(&ipvs).await, (services, services * per_service), "the peer's table");
        // Emptied here, so that little is left for the namespace's teardown (see [`settle`]).
        ipvsadm(&["-C"]).unwrap();
        ip(&["link", "del", "peer-ipvs0"]).unwrap();
        (restore, bind)
    })
}

/// `KIP_IPVS_RUN_ESTIMATION`, if set, written to the calling thread's namespace's
/// `net.ipv4.vs.run_estimation` (0: the kernel's rate estimation off; on 6.1 its timer walks
/// every virtual and real server's estimator every 2 s); the value written.
pub fn run_estimation_from_env() -> Option<String> {
    let value = std::env::var("KIP_IPVS_RUN_ESTIMATION").ok()?;
    std::fs::write("/proc/sys/net/ipv4/vs/run_estimation", &value).expect("net.ipv4.vs.run_estimation");
    Some(value)
}

/// Whether the kernel estimates IPVS rates in softirq context: before Linux 6.2 its timer walks
/// every estimator (one per virtual and real server) every 2 s on one vCPU, with the thread it
/// interrupts held meanwhile (6.2 moved it to kernel threads).
pub fn estimation_in_softirq() -> bool {
    let estimating = std::fs::read_to_string("/proc/sys/net/ipv4/vs/run_estimation").unwrap_or_default();
    integration::before_6_2(&integration::kernel_release()) && estimating.trim() != "0"
}

/// Waits until the VM's vCPUs are idle (under 10% busy over a second), at most `limit`, and
/// returns how long that took. A table just torn down is still being freed (RCU callbacks, a
/// network namespace's cleanup work, the trash of deleted real servers): a measurement begun
/// meanwhile would share the vCPUs with it, and whichever side of a comparison came second
/// would pay for the first.
pub fn settle(limit: Duration) -> Duration {
    let start = Instant::now();
    let me = std::process::id();
    while start.elapsed() < limit {
        let before = CpuTicks::read(me);
        std::thread::sleep(Duration::from_secs(1));
        if CpuTicks::read(me).vm_busy(&before) < 0.10 {
            break;
        }
    }
    start.elapsed()
}

/// A `/proc/PID/status` field, e.g. `VmHWM` (the peak resident size) or `VmRSS` (the current one).
pub fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{field}:");
    let line = status.lines().find(|l| l.starts_with(&prefix)).unwrap_or("unknown");
    line.trim_start_matches(&prefix).trim().to_string()
}

/// CPU time so far, in clock ticks: the whole VM's (all vCPUs, and how much of it idle) and
/// process `pid`'s (user and system).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    total: u64,
    idle: u64,
    process: u64,
}

impl CpuTicks {
    /// Read from `/proc/stat` and `/proc/PID/stat`; zeros for what cannot be read.
    pub fn read(pid: u32) -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let vm: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let total = vm.iter().take(8).sum();
        let idle = vm.get(3).copied().unwrap_or(0) + vm.get(4).copied().unwrap_or(0);
        let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = own.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        CpuTicks { total, idle, process: field(14) + field(15) }
    }

    /// Since `earlier`: the share of the VM's vCPUs that was busy (0 to 1).
    pub fn vm_busy(&self, earlier: &CpuTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        1.0 - self.idle.saturating_sub(earlier.idle) as f64 / total
    }

    /// Since `earlier`: the process's share of one vCPU and how busy the VM's vCPUs were, in
    /// percent (`daemon 85% of a vCPU, VM 97% busy`).
    pub fn since(&self, earlier: &CpuTicks) -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let process = self.process.saturating_sub(earlier.process) as f64;
        format!(
            "daemon {:.0}% of a vCPU, VM {:.0}% busy",
            100.0 * process * cpus / total,
            100.0 * self.vm_busy(earlier)
        )
    }
}

/// Process `pid`'s file-backed resident memory by file, largest first (`/proc/PID/smaps`): how
/// much of the peak is the binary's own code, which every node keeps too.
pub fn file_rss(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_file: Vec<(String, u64)> = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let rest: Vec<&str> = words.collect();
            current = rest.get(4).filter(|p| p.starts_with('/')).map(|p| (*p).to_string());
        } else if first == "Rss:"
            && let Some(path) = &current
        {
            let kib: u64 = words.next().and_then(|k| k.parse().ok()).unwrap_or(0);
            match by_file.iter_mut().find(|(p, _)| p == path) {
                Some((_, total)) => *total += kib,
                None => by_file.push((path.clone(), kib)),
            }
        }
    }
    by_file.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    let shown: Vec<String> = by_file.iter().take(4).map(|(p, k)| format!("{p} {k} kB")).collect();
    shown.join(", ")
}

/// The CPU time (user and system) process `pid` and its finished children (the `nft` it runs)
/// have used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first; utime, stime,
    // cutime and cstime the 12th to the 15th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..15).map(|f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Duration::from_millis(ticks * 1000 / hz)
}

/// With `KIP_PROFILE` set, samples process `pid` with `perf record` (its functions' own time;
/// `KIP_PROFILE=stacks` adds call chains, whole only in the kernel: the release build keeps no
/// frame pointers) until the returned guard is
/// finished, which prints the hottest functions; without it, does nothing. For finding where
/// a window's CPU goes, not a figure of the bench.
pub struct Profile(Option<std::process::Child>);

impl Profile {
    pub fn start(pid: u32, what: &str) -> Profile {
        Profile::sample(&["-p", &pid.to_string()], what)
    }

    /// Like [`Profile::start`], of the whole guest (every process and the kernel): where a
    /// window's CPU goes when the daemon shares it with the fake API server.
    pub fn start_system(what: &str) -> Profile {
        Profile::sample(&["-a"], what)
    }

    fn sample(target: &[&str], what: &str) -> Profile {
        if std::env::var_os("KIP_PROFILE").is_none() {
            return Profile(None);
        }
        let out = format!("/tmp/kip-profile-{what}.data");
        // `KIP_PROFILE=stacks`: with call chains, of which only the kernel's are whole (who
        // faulted a page in, who sent what), user space having no frame pointers.
        let stacks = std::env::var("KIP_PROFILE").is_ok_and(|v| v == "stacks");
        let child = std::process::Command::new("perf")
            .args(["record", "-q", "-F", "499", "-o", &out])
            .args(target)
            .args(stacks.then_some("-g"))
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Profile(Some(child)),
            Err(e) => {
                println!("profile   {what}: cannot run perf: {e}");
                Profile(None)
            }
        }
    }

    pub fn finish(self, what: &str) {
        let Some(mut child) = self.0 else { return };
        // SAFETY: kill with a pid this process spawned and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
        let out = format!("/tmp/kip-profile-{what}.data");
        let stacks = std::env::var("KIP_PROFILE").is_ok_and(|v| v == "stacks");
        let view: &[&str] = if stacks {
            &["--no-children", "--percent-limit", "2", "-g", "caller,2,callee,function,percent"]
        } else {
            &["--percent-limit", "0.5"]
        };
        let report = std::process::Command::new("perf")
            .args(["report", "-i", &out, "--stdio", "--sort", "comm,dso,sym"])
            .args(view)
            .output();
        match report {
            Ok(r) => {
                for line in String::from_utf8_lossy(&r.stdout).lines().filter(|l| !l.starts_with('#') && !l.is_empty())
                {
                    println!("profile   {what} | {line}");
                }
            }
            Err(e) => println!("profile   {what}: cannot run perf report: {e}"),
        }
    }
}

pub fn peak_rss(pid: u32) -> String {
    status_field(pid, "VmHWM")
}

/// Starts the daemon (sync period 30 s, upstream's default) on `services` Services of
/// `per_service` endpoints each, served by a fresh fake API server, and waits until it reports
/// its first full sync done, checked against the kernel. Returns the cluster, the daemon and
/// the time from its start to that report.
pub async fn cold_start(ipvs: &ipvs::Client, services: usize, per_service: usize) -> (Cluster, Daemon, Duration) {
    // Cold start of the daemon.
    let cluster = Cluster::start();
    let mut objects = Vec::with_capacity(services * 2);
    for i in 0..services {
        objects.push(service(i));
        let endpoints: Vec<Ipv4Addr> = (0..per_service).map(|j| endpoint_ip(i, j, 0)).collect();
        objects.push(slice(i, &endpoints));
    }
    cluster.apply_objects(objects);
    let (daemon, cold) = start_daemon(ipvs, &cluster, services, per_service).await;
    (cluster, daemon, cold)
}

/// Starts the daemon against `cluster` (holding `services` x `per_service`) on an empty kernel,
/// waits for its first full sync, checks the kernel against it and returns the daemon with
/// the time that took; prints where the time and memory went.
pub async fn start_daemon(
    ipvs: &ipvs::Client,
    cluster: &Cluster,
    services: usize,
    per_service: usize,
) -> (Daemon, Duration) {
    println!(
        "daemon    started at {}",
        integration::run("date", &["-u", "+%H:%M:%S.%6N"], None).unwrap_or_default().trim()
    );
    let profile = Profile::start_system("cold-start");
    let start = Instant::now();
    // Upstream's default sync period: the periodic full reconcile is part of the cost.
    // `KIP_DAEMON_LOG` sets the daemon's log filter: by default info, and the verification's
    // whole-table reads and the heap's trims, which the peak's rises are matched with.
    let filter = std::env::var("KIP_DAEMON_LOG")
        .unwrap_or_else(|_| "info,proxier::sync::verification=debug,kube_ipvs_proxy::run::heap=debug".into());
    let mut daemon =
        Daemon::start_with_sync_period_and_env(cluster, Duration::from_secs(30), &[("KUBE_IPVS_PROXY_LOG", &filter)]);
    // When the daemon reports its first full sync done (its log, polled every 50 ms: a
    // dump of 110,000 entries takes seconds under TCG and would both steal the daemon's CPU
    // and add its own duration to the figure). The claim is then checked against the
    // kernel: every virtual and real server and every ClusterIP bound, with no later sync
    // in between that could have completed it.
    // The resident size sampled along the way, to show which phase sets the peak.
    let mut lists_done: Option<(Duration, String)> = None;
    let mut rss_trace = Vec::new();
    // And the CPU each second: whether the lists' arrival leaves a vCPU idle.
    let mut cpu = CpuTicks::read(daemon.pid());
    let reported = loop {
        let rss = status_field(daemon.pid(), "VmRSS");
        if rss_trace.last().is_none_or(|(t, _): &(Duration, String)| start.elapsed() - *t >= Duration::from_secs(1)) {
            // With the peak so far, which a short burst between two samples may have set.
            let peak = peak_rss(daemon.pid());
            let now = CpuTicks::read(daemon.pid());
            let used = now.since(&cpu);
            cpu = now;
            rss_trace.push((start.elapsed(), format!("{} (peak {}; {used})", rss.trim_end_matches(" kB"), peak)));
        }
        if lists_done.is_none() && daemon.log().contains("first lists complete") {
            lists_done = Some((start.elapsed(), rss.clone()));
        }
        if let Some(line) = daemon.log().lines().find(|l| l.contains("full sync:")) {
            assert!(line.contains(", 0 failed,"), "the cold start sync failed steps: {line}");
            break start.elapsed();
        }
        assert!(daemon.running(), "the daemon exited during the cold start:\n{}", daemon.log());
        assert!(start.elapsed() < Duration::from_secs(1800), "cold start not done after 30 min");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    profile.finish("cold-start");
    assert_eq!(
        kernel_counts(ipvs).await,
        (services, services * per_service),
        "the kernel after the daemon reported its cold start done"
    );
    let link = ipvs::DummyLink::ensure("kube-ipvs0").await.expect("kube-ipvs0");
    let bound = link.addresses().await.expect("kube-ipvs0 addresses").len();
    assert_eq!(bound, services, "ClusterIPs bound after the cold start");
    let confirmed = start.elapsed();
    // Syncs that wrote nothing (woken by the binds' own address notifications) may run.
    let syncs = daemon.log().lines().filter(|l| l.contains(" sync: ") && !l.contains(" sync: 0 steps")).count();
    assert_eq!(syncs, 1, "no sync that writes may run between the report and its check:\n{}", daemon.log());
    let cold = reported;
    println!(
        "daemon    cold start to a fully programmed kernel {cold:.2?} (reported by the daemon; \
         confirmed by a dump of the IPVS table and of kube-ipvs0's addresses at {confirmed:.2?})"
    );
    println!("daemon    peak RSS after the cold start {}", peak_rss(daemon.pid()));
    if let Some((t, rss)) = &lists_done {
        println!("daemon    lists complete seen at {t:.2?}, RSS then {rss}");
    }
    let trace: Vec<String> = rss_trace.iter().map(|(t, rss)| format!("{:.0}s {rss}", t.as_secs_f64())).collect();
    println!("daemon    RSS and CPU along the cold start: {}", trace.join(", "));
    (daemon, cold)
}

/// Stops `daemon` and removes what it programmed: the IPVS table, kube-ipvs0 and its nftables
/// table. IPVS's service hash table and the kernel's address hash are shared by all network
/// namespaces, so a peer measured next would otherwise find 10,000 more entries in each chain
/// it walks; and a daemon started next starts cold.
pub fn remove_daemon(mut daemon: Daemon) {
    daemon.kill_9();
    ipvsadm(&["-C"]).unwrap();
    ip(&["link", "del", "kube-ipvs0"]).unwrap();
    integration::run("nft", &["delete", "table", "inet", "kube-ipvs-proxy"], None).unwrap();
}
