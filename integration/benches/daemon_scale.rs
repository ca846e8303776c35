//! Scale bench of the daemon, on the VM kernel (run by `integration/bench`, not on the host):
//!
//! 1. cold start: 10,000 Services x 10 endpoints served by the fake API server; time from
//!    starting `kube-ipvs-proxy run` to the daemon reporting its first full sync done, checked
//!    against the kernel (every virtual server, real server and bound ClusterIP), against the
//!    peer measured in the same run, once before the daemon starts and once right after its
//!    cold start, the daemon stopped and its state removed (each in a fresh network namespace,
//!    as the daemon's was, and each after the VM has settled): `ipvsadm -R` of the same rules
//!    plus `ip -batch` binding the same ClusterIPs on a dummy link. The ratio is taken against
//!    the two's mean: the host's speed drifts over a run by more than the target's margin, and
//!    the two bracket the daemon within minutes;
//! 2. on a daemon started again alike once the kernel has freed the first one's real servers (its
//!    cold start printed, not judged), change latency in steady state: for `KIP_CHANGE_SECONDS`
//!    (default 600: twenty periodic verifications of the virtual servers and two whole rounds of
//!    the real servers'), twice a second one EndpointSlice of the first half of the Services gets a
//!    new endpoint, timed from the API server committing it to the real server being in the kernel
//!    (p50, p99), while `KIP_CHURN_PER_SECOND` (default 10) changes a second go to the other half;
//!    a probe thread measures the VM's own stalls meanwhile (see `integration::StallProbe`), and
//!    the slowest changes are printed with the stalls within them;
//! 3. the daemon's peak resident memory (VmHWM);
//! 4. its CPU time while idle, over `KIP_IDLE_SECONDS` (default 300), as a share of one vCPU.
//!    No peer: upstream kube-proxy does not run here.
//!
//! Exits non-zero when a target is missed: issue 4's (cold start no slower than the peer, change
//! p99 under 50 ms, peak RSS under 100 MiB) and issue 10's (cold start at most 0.25 of the
//! peer, peak RSS under 64 MiB, idle CPU at most 2% of a vCPU).
//!
//! Sizes can be lowered with `KIP_SCALE_SERVICES` and `KIP_SCALE_ENDPOINTS` for a quick look.
//! `KIP_IPVS_RUN_ESTIMATION=0` turns the kernel's rate estimation off in the bench's namespace
//! and the peer's (on 6.1 its timer holds up real server writes every 2 s: see
//! `benches/RESULTS.md`), as the daemon's `--ipvs-rate-estimation=auto` does there.
//! With `KIP_PROFILE` set, `perf` samples the daemon over the steady and idle windows and the
//! hottest functions are printed (sampling costs the daemon a little CPU: not for the figures).

#[path = "../tests/daemon_support/mod.rs"]
mod daemon_support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use integration::{StallProbe, in_netns};

#[path = "scale/mod.rs"]
mod scale;

use scale::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench` asks bench targets to list themselves.
    }
    let services = env_or("KIP_SCALE_SERVICES", 10_000);
    let per_service = env_or("KIP_SCALE_ENDPOINTS", 10);
    println!("daemon_scale: {services} Services x {per_service} endpoints");
    println!("daemon_scale: proxy binary {}", integration::proxy_binary().display());

    in_netns(move || async move {
        daemon_support::node_link();
        let ipvs = ipvs::Client::connect().await.expect("IPVS netlink");
        if let Some(value) = run_estimation_from_env() {
            println!("daemon_scale: net.ipv4.vs.run_estimation = {value}");
        }

        // The peer before the daemon (its second measurement comes right after its cold start).
        let before = measure_peer(services, per_service, "before the daemon");
        let waited = settle(SETTLE_LIMIT);
        println!("daemon    starts after the VM settled for {waited:.2?}");
        let (cluster, first, cold) = cold_start(&ipvs, services, per_service).await;
        // Where the cold start went: the daemon's own phase log (info level, timestamped).
        for line in first.log().lines().take(40) {
            println!("daemon log | {line}");
        }
        // The peer again, right after the cold start, so that the two bracket it within
        // minutes (the host's speed drifts by more than the target's margin over a run), from
        // an empty namespace too.
        remove_daemon(first);
        let removed = Instant::now();
        let after = measure_peer(services, per_service, "after the daemon's cold start");
        let peer = (before.0 + before.1 + after.0 + after.1) / 2;
        let restore = (before.0 + after.0) / 2;
        let ratio = |peer: Duration| cold.as_secs_f64() / peer.as_secs_f64();
        println!(
            "daemon    cold start / (ipvsadm -R + ip -batch) = {:.2} against the mean of the two ({peer:.2?}; {:.2} against the one before, {:.2} against the one after), daemon / ipvsadm -R = {:.2}",
            ratio(peer),
            ratio(before.0 + before.1),
            ratio(after.0 + after.1),
            ratio(restore)
        );

        // The steady state, on a daemon started again alike (its cold start is printed, not
        // judged), once IPVS has freed the real servers removed above: it keeps each in its
        // namespace's trash until the second of its minute-apart checks that finds it idle
        // (about 3 minutes), and scans the trash for every real server added (to reuse one), so
        // a daemon started sooner pays a scan of 100,000 per addition (73 to 85 s to program
        // instead of 18).
        tokio::time::sleep(IPVS_TRASH_FREED.saturating_sub(removed.elapsed())).await;
        let waited = settle(SETTLE_LIMIT);
        println!("daemon    starts again, for the steady state, after the VM settled for {waited:.2?}");
        let (daemon, _) = start_daemon(&ipvs, &cluster, services, per_service).await;
        for line in daemon.log().lines().take(40) {
            println!("daemon log | {line}");
        }

        // Change latency in steady state: measured changes on the first half of the Services,
        // background churn on the other half, for long enough to span many verifications.
        let window = Duration::from_secs(env_or("KIP_CHANGE_SECONDS", 600) as u64);
        let churn_rate = env_or("KIP_CHURN_PER_SECOND", 10).max(1);
        let half = (services / 2).max(1);
        let steady_start = Instant::now();
        let daemon_pid = daemon.pid();
        let churn = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / churn_rate as u32);
            let mut n = 0;
            while steady_start.elapsed() < window {
                tick.tick().await;
                let i = half + (n * 7919) % (services - half).max(1);
                let mut endpoints: Vec<Ipv4Addr> = (0..per_service).map(|j| endpoint_ip(i, j, 0)).collect();
                endpoints[1 % per_service] = endpoint_ip(i, 1 % per_service, 101 + n % 100);
                cluster.apply_objects(vec![slice(i, &endpoints)]);
                n += 1;
            }
            n
        };
        let measure = async {
            let mut latencies = Vec::new();
            let mut c = 0;
            while steady_start.elapsed() < window {
                let paced = Instant::now();
                let i = (c * 7919) % half;
                let mut endpoints: Vec<Ipv4Addr> = (0..per_service).map(|j| endpoint_ip(i, j, 0)).collect();
                let fresh = endpoint_ip(i, 0, 1 + c % 100);
                endpoints[0] = fresh;
                let want = IpAddr::V4(fresh);
                let committed = std::time::SystemTime::now();
                let start = Instant::now();
                cluster.apply_objects(vec![slice(i, &endpoints)]);
                loop {
                    let reals = ipvs.list_real_servers(&vs_id(i)).await.unwrap_or_default();
                    let present: HashSet<IpAddr> = reals.iter().map(|r| r.server.id.addr).collect();
                    if present.contains(&want) {
                        latencies.push((start.elapsed(), i, committed));
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(60) {
                        let stacks = integration::run(
                            "gdb",
                            &["-p", &daemon_pid.to_string(), "-batch", "-ex", "thread apply all bt"],
                            None,
                        );
                        panic!("change {c} not programmed in 60 s; the daemon's threads:\n{stacks:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                c += 1;
                tokio::time::sleep(Duration::from_millis(500).saturating_sub(paced.elapsed())).await;
            }
            latencies
        };
        // When the peak resident size rises, to match with the daemon's log.
        let steady_utc = integration::run("date", &["-u", "+%H:%M:%S"], None).unwrap_or_default();
        let peak_kib = move || peak_rss(daemon_pid).trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        let rises = async {
            let mut rises = Vec::new();
            let mut last = peak_kib();
            while steady_start.elapsed() < window {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = peak_kib();
                if now > last {
                    rises.push((steady_start.elapsed(), std::time::SystemTime::now(), now));
                    last = now;
                }
            }
            rises
        };
        let profile = Profile::start(daemon.pid(), "steady");
        let probe = StallProbe::start();
        let (churned, mut latencies, rises) = tokio::join!(churn, measure, rises);
        let stalls = probe.finish();
        let shown = rises.len().min(40);
        let listed: Vec<String> = rises[rises.len() - shown..]
            .iter()
            .map(|(at, _, kib)| format!("+{:.1}s {kib}", at.as_secs_f64()))
            .collect();
        println!("daemon    peak RSS rose in the steady state (from {}): {}", steady_utc.trim(), listed.join(", "));
        print_log_near_rises(&rises, &daemon.log());
        profile.finish("steady");
        let changes = latencies.len();
        latencies.sort();
        println!("VM        stalls over the steady state (a thread waking every 2 ms): {}", stalls.summary());
        attribute_slowest(&latencies, &daemon.log(), &stalls);
        let latencies: Vec<Duration> = latencies.into_iter().map(|(latency, _, _)| latency).collect();
        let verifications = daemon.log().lines().filter(|l| l.contains("verification sync:")).count();
        println!(
            "daemon    steady state over {window:?}: {churned} background changes, {verifications} periodic verifications"
        );
        println!(
            "daemon    EndpointSlice change to kernel over {changes} changes: p50 {:.2?} p99 {:.2?} max {:.2?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default()
        );
        let hwm = peak_rss(daemon.pid());
        let field = |name| status_field(daemon.pid(), name);
        println!(
            "daemon    peak RSS {hwm} (resident now {}: anonymous {}, file {})",
            field("VmRSS"),
            field("RssAnon"),
            field("RssFile")
        );
        println!("daemon    file-backed resident by file: {}", file_rss(daemon.pid()));
        let p99 = percentile(&latencies, 0.99);
        let hwm_kib: Option<u64> = hwm.trim_end_matches("kB").trim().parse().ok();
        let idle_window = Duration::from_secs(env_or("KIP_IDLE_SECONDS", 300) as u64);
        let cpu_before = cpu_time(daemon.pid());
        let profile = Profile::start(daemon.pid(), "idle");
        tokio::time::sleep(idle_window).await;
        profile.finish("idle");
        let idle_cpu = (cpu_time(daemon.pid()) - cpu_before).as_secs_f64() / idle_window.as_secs_f64();
        println!(
            "daemon    idle CPU over {idle_window:?} (sync period 30 s, real servers verified over 5 min): {:.2}% of one vCPU",
            idle_cpu * 100.0
        );
        for line in daemon.log().lines().filter(|l| l.contains("verification sync")).take(5) {
            println!("daemon log | {line}");
        }
        // Where the slow syncs' time went (the cold start's own is printed above).
        for line in daemon.log().lines().filter(|l| l.contains("slow sync phases")).skip(1).take(30) {
            println!("daemon log | {line}");
        }
        // The targets, all checked so that the bench exits non-zero when one is missed.
        let targets = [
            ("cold start no slower than ipvsadm -R + ip -batch", cold <= peer),
            ("EndpointSlice change p99 < 50 ms, with churn and verifications", p99 < Duration::from_millis(50)),
            ("peak RSS < 100 MiB", hwm_kib.is_some_and(|k| k < 100 * 1024)),
            ("issue 10: cold start <= 0.25 of ipvsadm -R + ip -batch", cold.as_secs_f64() <= 0.25 * peer.as_secs_f64()),
            ("issue 10: peak RSS < 64 MiB", hwm_kib.is_some_and(|k| k < 64 * 1024)),
            ("issue 10: idle CPU <= 2% of one vCPU", idle_cpu <= 0.02),
        ];
        for (target, met) in &targets {
            println!("target    {target}: {}", if *met { "met" } else { "MISSED" });
        }
        if !targets[1].1 && scale::estimation_in_softirq() {
            println!(
                "target    (the change tail: this kernel's rate estimation stalls a vCPU every 2 s, see the probe's stalls \
                 over 50 ms; `--ipvs-rate-estimation=auto`, KIP_IPVS_RUN_ESTIMATION=0 here, turns it off)"
            );
        }
        assert!(targets.iter().all(|(_, met)| *met), "a daemon_scale target was missed");
    });
}

/// How long IPVS takes at most to free real servers removed together (see their trash's
/// timer in the kernel's `ip_vs_ctl.c`: a 60 s check, freed 120 s after the first that finds
/// them idle), with room for the timer's slack.
const IPVS_TRASH_FREED: Duration = Duration::from_secs(240);

/// How long to wait at most for the VM to settle before a measurement.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// The peer's two parts, `ipvsadm -R` and `ip -batch`, measured once the VM has settled.
fn measure_peer(services: usize, per_service: usize, when: &str) -> (Duration, Duration) {
    let waited = settle(SETTLE_LIMIT);
    let (restore, bind) = peer(services, per_service);
    println!(
        "peer      {when}: ipvsadm -R {restore:.2?} + ip -batch {bind:.2?} = {:.2?} (begun after the VM settled for {waited:.2?})",
        restore + bind
    );
    (restore, bind)
}

/// What the daemon logged in the two seconds before each rise of its peak resident size, other
/// than its incremental syncs (a dozen a second under churn): which verification, round or
/// relist the peak came with.
fn print_log_near_rises(rises: &[(Duration, std::time::SystemTime, u64)], log: &str) {
    use k8s_openapi::jiff::Timestamp;
    let lines: Vec<(Timestamp, &str)> = log
        .lines()
        .filter(|l| !l.contains("incremental sync:") && !l.contains("slow sync phases"))
        .filter_map(|l| Some((l.split_whitespace().next()?.parse().ok()?, l)))
        .collect();
    for (at, wall, kib) in rises {
        let Ok(wall) = Timestamp::try_from(*wall) else { continue };
        let near: Vec<&str> = lines
            .iter()
            .filter(|(t, _)| *t <= wall && wall.duration_since(*t).unsigned_abs() <= Duration::from_secs(2))
            .map(|(_, l)| *l)
            .take(8)
            .collect();
        println!("rise      +{:.1}s {kib} kB, logged in the 2 s before: {}", at.as_secs_f64(), near.len());
        for line in near {
            println!("rise      | {line}");
        }
    }
}
