//! The kernel settings upstream's IPVS mode sets at start. A setting that cannot be written is
//! a warning naming it, not a failure: the proxy still programs IPVS without it.

use std::path::Path;

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

/// The settings to write for a kernel `release`, as (path under /proc/sys, value).
pub fn settings(release: &str, strict_arp: bool) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "1"),
        ("net/ipv4/ip_forward", "1"),
    ];
    if wants_conn_reuse_mode_zero(release) {
        out.push(("net/ipv4/vs/conn_reuse_mode", "0"));
    }
    if strict_arp {
        out.push(("net/ipv4/conf/all/arp_ignore", "1"));
        out.push(("net/ipv4/conf/all/arp_announce", "2"));
    }
    out
}

/// Writes the settings under `root` (`/proc/sys`), each only if it differs; returns how many
/// were changed. Failures are logged as warnings naming the setting.
pub fn apply(root: &Path, strict_arp: bool) -> usize {
    let release = std::fs::read_to_string(root.join("kernel/osrelease")).unwrap_or_default();
    let mut changed = 0;
    for (name, value) in settings(&release, strict_arp) {
        let path = root.join(name);
        let dotted = name.replace('/', ".");
        match std::fs::read_to_string(&path) {
            Ok(current) if current.trim() == value => continue,
            Ok(_) | Err(_) => {}
        }
        match std::fs::write(&path, value) {
            Ok(()) => {
                tracing::info!("set {dotted}={value}");
                changed += 1;
            }
            Err(e) => tracing::warn!("cannot set {dotted}={value}: {e}"),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let changed = apply(&root, true);
        // expire_nodest_conn, expire_quiescent_template, ip_forward, conn_reuse_mode, arp_ignore.
        assert_eq!(changed, 5);
        for (name, value) in
            [("net/ipv4/ip_forward", "1"), ("net/ipv4/vs/conn_reuse_mode", "0"), ("net/ipv4/conf/all/arp_ignore", "1")]
        {
            assert_eq!(std::fs::read_to_string(root.join(name)).unwrap().trim(), value, "{name}");
        }
        assert_eq!(apply(&root, true), 0, "a second start writes nothing");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
