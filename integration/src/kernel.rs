//! The running kernel's release, for what tests and benches expect of it.

/// The running kernel's release (`/proc/sys/kernel/osrelease`, e.g. `6.1.0-27-amd64`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("/proc/sys/kernel/osrelease").trim().to_string()
}

/// Whether `release` is older than Linux 6.2, whose IPVS estimates rates in a softirq timer
/// (6.2 moved it to kernel threads). An unreadable release counts as older.
pub fn before_6_2(release: &str) -> bool {
    let mut version = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    (version.next().unwrap_or(0), version.next().unwrap_or(0)) < (6, 2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn releases_before_6_2() {
        for (release, before) in
            [("6.1.0-27-amd64", true), ("6.12.117+deb12-amd64", false), ("5.4.0-150-generic", true), ("6.2", false)]
        {
            assert_eq!(super::before_6_2(release), before, "{release}");
        }
    }
}
