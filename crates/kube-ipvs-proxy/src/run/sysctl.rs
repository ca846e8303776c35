//! The kernel settings upstream's IPVS mode sets at start. A setting that cannot be written is
//! a warning naming it, not a failure: the proxy still programs IPVS without it.

use std::path::Path;

use crate::config::{Conntrack, RateEstimation};

/// `conn_reuse_mode=0` avoids a 1 s stall on reused ports, but from Linux 5.9 the kernel fixed
/// that and the setting instead drops packets to removed destinations; before 4.1 it does not
/// exist. Upstream writes it only in between.
fn wants_conn_reuse_mode_zero(release: &str) -> bool {
    match kernel_version(release) {
        Some(v) => ((4, 1)..(5, 9)).contains(&v),
        None => false,
    }
}

/// `major.minor` from a release string like `5.4.0-150-generic` or `6.1.0-27-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether rate estimation is to be turned off on kernel `release` (see [`RateEstimation`]).
fn estimation_off(release: &str, mode: RateEstimation) -> bool {
    match mode {
        RateEstimation::Auto => kernel_version(release).is_some_and(|v| v < (6, 2)),
        RateEstimation::Keep => false,
        RateEstimation::Off => true,
    }
}

/// The settings to write for a kernel `release` on a node with `cpus` CPUs, as (path under
/// /proc/sys, value): IPVS's, forwarding, strict ARP when asked, rate estimation off as
/// `estimation` says, and kube-proxy's conntrack tuning (a zero leaves the kernel's value).
pub fn settings(
    release: &str,
    strict_arp: bool,
    estimation: RateEstimation,
    conntrack: &Conntrack,
    cpus: u32,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = vec![
        ("net/ipv4/vs/conntrack", "1".into()),
        ("net/ipv4/vs/expire_nodest_conn", "1".into()),
        ("net/ipv4/vs/expire_quiescent_template", "1".into()),
        ("net/ipv4/ip_forward", "1".into()),
    ];
    if wants_conn_reuse_mode_zero(release) {
        out.push(("net/ipv4/vs/conn_reuse_mode", "0".into()));
    }
    if estimation_off(release, estimation) {
        out.push(("net/ipv4/vs/run_estimation", "0".into()));
    }
    if strict_arp {
        out.push(("net/ipv4/conf/all/arp_ignore", "1".into()));
        out.push(("net/ipv4/conf/all/arp_announce", "2".into()));
    }
    if let Some(max) = conntrack.max(cpus) {
        out.push(("net/netfilter/nf_conntrack_max", max.to_string()));
    }
    let seconds = [
        ("net/netfilter/nf_conntrack_tcp_timeout_established", conntrack.tcp_established),
        ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", conntrack.tcp_close_wait),
        ("net/netfilter/nf_conntrack_udp_timeout", conntrack.udp),
        ("net/netfilter/nf_conntrack_udp_timeout_stream", conntrack.udp_stream),
    ];
    out.extend(seconds.into_iter().filter(|(_, d)| d.as_secs() > 0).map(|(name, d)| (name, d.as_secs().to_string())));
    if conntrack.tcp_be_liberal {
        out.push(("net/netfilter/nf_conntrack_tcp_be_liberal", "1".into()));
    }
    out
}

/// The conntrack hash table size upstream asks for with a table of `max` entries: a quarter of
/// it, so that chains stay about four entries long. Only ever raised.
fn wanted_hashsize(current: &str, max: u32) -> Option<u32> {
    let wanted = max / 4;
    match current.trim().parse::<u32>() {
        Ok(have) if have >= wanted => None,
        _ => Some(wanted),
    }
}

/// Raises the conntrack hash table at `path` (`/sys/module/nf_conntrack/parameters/hashsize`)
/// to a quarter of `max` when it is smaller; returns whether it was written. Best effort, as
/// upstream: the kernel refuses the write outside the initial network namespace and a
/// read-only /sys refuses it too, so a failure is a warning naming the file.
fn raise_hashsize(path: &Path, max: u32) -> bool {
    let current = match std::fs::read_to_string(path) {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            return false;
        }
    };
    let Some(wanted) = wanted_hashsize(&current, max) else { return false };
    match std::fs::write(path, wanted.to_string()) {
        Ok(()) => {
            tracing::info!("set {}={wanted}", path.display());
            true
        }
        Err(e) => {
            tracing::warn!("cannot set {}={wanted}: {e}", path.display());
            false
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Settings written because they differed.
    pub changed: usize,
    /// Settings that differ and could not be written (the hash table, best effort, is not
    /// counted).
    pub failed: usize,
}

/// Writes the settings under `root` (`/proc/sys`), each only if it differs, then raises the
/// conntrack hash table at `hashsize` when nf_conntrack_max is tuned. Failures are logged as
/// warnings naming the setting.
pub fn apply(
    root: &Path,
    hashsize: &Path,
    strict_arp: bool,
    estimation: RateEstimation,
    conntrack: &Conntrack,
) -> Applied {
    let release = std::fs::read_to_string(root.join("kernel/osrelease")).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    let mut applied = Applied::default();
    for (name, value) in settings(&release, strict_arp, estimation, conntrack, cpus) {
        let path = root.join(name);
        let dotted = name.replace('/', ".");
        match std::fs::read_to_string(&path) {
            Ok(current) if current.trim() == value => continue,
            Ok(_) | Err(_) => {}
        }
        match std::fs::write(&path, &value) {
            Ok(()) => {
                tracing::info!("set {dotted}={value}");
                applied.changed += 1;
            }
            Err(e) => {
                tracing::warn!("cannot set {dotted}={value}: {e}");
                applied.failed += 1;
            }
        }
    }
    if let Some(max) = conntrack.max(cpus) {
        applied.changed += usize::from(raise_hashsize(hashsize, max));
    }
    applied
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Conntrack tuning that writes nothing.
    fn leave_conntrack() -> Conntrack {
        Conntrack {
            max_per_core: 0,
            min: 0,
            tcp_established: Duration::ZERO,
            tcp_close_wait: Duration::ZERO,
            tcp_be_liberal: false,
            udp: Duration::ZERO,
            udp_stream: Duration::ZERO,
        }
    }

    /// Issue 8, item 5: kube-proxy's conntrack tuning, as upstream computes it.
    #[test]
    fn conntrack_tuning_as_upstream() {
        let defaults = Conntrack {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established: Duration::from_secs(86400),
            tcp_close_wait: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp: Duration::ZERO,
            udp_stream: Duration::ZERO,
        };
        let conntrack = |all: Vec<(&'static str, String)>| -> Vec<(&'static str, String)> {
            all.into_iter().filter(|(n, _)| n.starts_with("net/netfilter")).collect()
        };
        // 2 CPUs: 65,536 is below the minimum; 8 CPUs: 262,144 is above it.
        assert_eq!(
            conntrack(settings("6.1.0", false, RateEstimation::Keep, &defaults, 2)),
            [
                ("net/netfilter/nf_conntrack_max", "131072".to_string()),
                ("net/netfilter/nf_conntrack_tcp_timeout_established", "86400".to_string()),
                ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", "3600".to_string()),
            ]
        );
        assert_eq!(conntrack(settings("6.1.0", false, RateEstimation::Keep, &defaults, 8))[0].1, "262144");
        let tuned = Conntrack {
            max_per_core: 0,
            tcp_be_liberal: true,
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            ..defaults
        };
        let got = conntrack(settings("6.1.0", false, RateEstimation::Keep, &tuned, 8));
        assert!(!got.iter().any(|(n, _)| *n == "net/netfilter/nf_conntrack_max"), "max per core 0: left alone");
        for want in [
            ("net/netfilter/nf_conntrack_udp_timeout", "30"),
            ("net/netfilter/nf_conntrack_udp_timeout_stream", "120"),
            ("net/netfilter/nf_conntrack_tcp_be_liberal", "1"),
        ] {
            assert!(got.contains(&(want.0, want.1.to_string())), "{want:?} in {got:?}");
        }
        assert!(conntrack(settings("6.1.0", false, RateEstimation::Keep, &leave_conntrack(), 8)).is_empty());
    }

    /// Issue 8, item 5: upstream also raises the conntrack hash table to a quarter of
    /// nf_conntrack_max, never lowers it, and a refused write is not fatal.
    #[test]
    fn hashsize_raised_to_a_quarter_of_max() {
        assert_eq!(wanted_hashsize("16384\n", 262_144), Some(65_536));
        assert_eq!(wanted_hashsize("65536\n", 262_144), None, "already enough");
        assert_eq!(wanted_hashsize("1048576\n", 262_144), None, "never lowered");
        assert_eq!(wanted_hashsize("garbage", 131_072), Some(32_768));

        let dir = std::env::temp_dir().join(format!("hashsize-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hashsize");
        std::fs::write(&path, "16384\n").unwrap();
        assert!(raise_hashsize(&path, 262_144));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "65536");
        assert!(!raise_hashsize(&path, 262_144), "a second start writes nothing");
        assert!(!raise_hashsize(&dir.join("missing"), 262_144), "no nf_conntrack module: a warning");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rate_estimation_off_before_6_2_unless_kept() {
        let cases: &[(&str, RateEstimation, bool)] = &[
            ("6.1.0-27-amd64", RateEstimation::Auto, true),
            ("5.4.0-150-generic", RateEstimation::Auto, true),
            ("6.2.0", RateEstimation::Auto, false),
            ("6.12.9", RateEstimation::Auto, false),
            ("garbage", RateEstimation::Auto, false),
            ("6.1.0", RateEstimation::Keep, false),
            ("6.12.9", RateEstimation::Off, true),
        ];
        for (release, mode, off) in cases {
            let written = settings(release, false, *mode, &leave_conntrack(), 2)
                .contains(&("net/ipv4/vs/run_estimation", "0".to_string()));
            assert_eq!(written, *off, "{release} {mode:?}");
        }
    }

    #[test]
    fn conn_reuse_mode_by_kernel_version() {
        let cases: &[(&str, bool)] = &[
            ("3.10.0-1160.el7.x86_64", false),
            ("4.1.0", true),
            ("4.19.0-26-amd64", true),
            ("5.4.0-150-generic", true),
            ("5.8.18", true),
            ("5.9.0", false),
            ("6.1.0-27-amd64", false),
            ("garbage", false),
            ("", false),
        ];
        for (release, want) in cases {
            assert_eq!(wants_conn_reuse_mode_zero(release), *want, "{release}");
        }
    }

    #[test]
    fn writes_only_what_differs_and_survives_failures() {
        let root = std::env::temp_dir().join(format!("sysctl-test-{}", std::process::id()));
        for dir in ["kernel", "net/ipv4/vs", "net/ipv4/conf/all"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("kernel/osrelease"), "5.4.0-150-generic\n").unwrap();
        std::fs::write(root.join("net/ipv4/vs/conntrack"), "1\n").unwrap();
        std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
        // arp_announce cannot be written: a directory stands in its way.
        std::fs::create_dir_all(root.join("net/ipv4/conf/all/arp_announce")).unwrap();
        let hashsize = root.join("hashsize");
        let applied = apply(&root, &hashsize, true, RateEstimation::Auto, &leave_conntrack());
        // expire_nodest_conn, expire_quiescent_template, ip_forward, conn_reuse_mode,
        // run_estimation (a 5.4 kernel), arp_ignore written; arp_announce failed.
        assert_eq!(applied, Applied { changed: 6, failed: 1 });
        for (name, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/vs/conn_reuse_mode", "0"),
            ("net/ipv4/vs/run_estimation", "0"),
            ("net/ipv4/conf/all/arp_ignore", "1"),
        ] {
            assert_eq!(std::fs::read_to_string(root.join(name)).unwrap().trim(), value, "{name}");
        }
        std::fs::remove_dir(root.join("net/ipv4/conf/all/arp_announce")).unwrap();
        std::fs::write(root.join("net/ipv4/conf/all/arp_announce"), "2\n").unwrap();
        assert_eq!(
            apply(&root, &hashsize, true, RateEstimation::Auto, &leave_conntrack()),
            Applied::default(),
            "nothing left to write"
        );
        assert!(!hashsize.exists(), "max per core 0: the hash table is left alone");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
