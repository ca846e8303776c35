//! kube-proxy's own command line, as kubeadm's DaemonSet runs it
//! (`/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=...`),
//! turned into this binary's before clap parses it: no subcommand (or the program named
//! `kube-proxy`) means `run`, `--cleanup` means `cleanup`, `--version` prints upstream's line and
//! this project's version, and every other flag of upstream's `kube-proxy --help` (1.30 to 1.35)
//! that does not apply here is accepted and named once in a warning instead of failing with
//! exit status 2 (CrashLoopBackOff on every node).

use std::ffi::OsString;

/// The Kubernetes release whose kube-proxy command line and configuration this binary takes.
pub const KUBERNETES_VERSION: &str = "v1.35.0";

/// Whether `word` is a subcommand of this binary's own command line (read from the parser, so
/// that a new subcommand is never taken for kube-proxy's arguments).
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help" || crate::cli::Cli::command().get_subcommands().any(|c| c.get_name() == word)
}

/// Upstream flags that take a value and do not apply here (logging, API client tuning, other
/// proxy modes).
const IGNORED_WITH_VALUE: &[&str] = &[
    "boot-id-file",
    "config-sync-period",
    "feature-gates",
    "healthz-port",
    "iptables-min-sync-period",
    "iptables-sync-period",
    "kube-api-burst",
    "kube-api-content-type",
    "kube-api-qps",
    "log-backtrace-at",
    "log-dir",
    "log-file",
    "log-file-max-size",
    "log-flush-frequency",
    "log-json-info-buffer-size",
    "log-text-info-buffer-size",
    "logging-format",
    "machine-id-file",
    "master",
    "oom-score-adj",
    "proxy-port-range",
    "show-hidden-metrics-for-version",
    "stderrthreshold",
    "vmodule",
    "write-config-to",
];

/// Upstream boolean flags that do not apply here (`--flag` or `--flag=BOOL`; Go's flag package
/// never takes a boolean's value as the next argument).
const IGNORED_BOOLEANS: &[&str] = &[
    "add-dir-header",
    "add_dir_header",
    "alsologtostderr",
    "bind-address-hard-fail",
    "init-only",
    "iptables-localhost-nodeports",
    "log-json-split-stream",
    "log-text-split-stream",
    "logtostderr",
    "one-output",
    "profiling",
    "skip-headers",
    "skip-log-headers",
];

/// The command line clap is to parse, and what was said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Arguments for clap, program name first.
    pub args: Vec<OsString>,
    /// Upstream flags accepted but not applied, as given (`--profiling`), in order, once each.
    pub ignored: Vec<String>,
    /// `--version` with kube-proxy's command line: print [`version_line`] and exit.
    pub version: bool,
}

/// What `--version` prints: upstream's line, then this project's version.
pub fn version_line() -> String {
    format!("Kubernetes {KUBERNETES_VERSION} (kube-ipvs-proxy {})", env!("CARGO_PKG_VERSION"))
}

/// Turns kube-proxy's command line into this binary's; this binary's own command line (a
/// subcommand first) passes unchanged.
pub fn normalize(args: Vec<OsString>) -> Normalized {
    let program = args.first().cloned().unwrap_or_else(|| OsString::from("kube-proxy"));
    let named_kube_proxy = std::path::Path::new(&program).file_name().is_some_and(|n| n == "kube-proxy");
    let first = args.get(1).and_then(|a| a.to_str());
    let own = !named_kube_proxy && first.is_some_and(|a| is_subcommand(a) || a == "--help" || a == "-h");
    // This binary's own top-level flags keep their meaning.
    let own = own || (!named_kube_proxy && matches!(first, Some("--version" | "-V")));
    if own {
        return Normalized { args, ignored: Vec::new(), version: false };
    }
    let mut rest: Vec<OsString> = args.into_iter().skip(1).collect();
    if named_kube_proxy && rest.first().and_then(|a| a.to_str()).is_some_and(is_subcommand) {
        // `kube-proxy run ...`: the link called with this binary's own command line.
        let mut out = vec![program];
        out.append(&mut rest);
        return Normalized { args: out, ignored: Vec::new(), version: false };
    }
    let mut kept = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut cleanup = false;
    let mut version = false;
    let mut verbosity = None;
    let mut iter = rest.into_iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str().map(str::to_owned) else {
            kept.push(arg);
            continue;
        };
        // Go's flag package takes one or two dashes alike.
        let Some(flag) = text.strip_prefix("--").or_else(|| text.strip_prefix('-')).filter(|f| !f.is_empty()) else {
            kept.push(arg);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        let note = |ignored: &mut Vec<String>| {
            let shown = format!("--{name}");
            if !ignored.contains(&shown) {
                ignored.push(shown);
            }
        };
        match name.as_str() {
            "cleanup" => cleanup = inline.as_deref().is_none_or(|v| v != "false"),
            "version" => version = inline.as_deref().is_none_or(|v| v != "false"),
            "v" => verbosity = inline.or_else(|| iter.next_if(|_| true).and_then(|v| v.into_string().ok())),
            n if IGNORED_BOOLEANS.contains(&n) => note(&mut ignored),
            n if IGNORED_WITH_VALUE.contains(&n) => {
                if inline.is_none() {
                    iter.next();
                }
                note(&mut ignored);
            }
            _ => kept.push(OsString::from(format!("--{flag}"))),
        }
    }
    let mut out = vec![program];
    // Upstream's -v: 4 and above is its debug level.
    if let Some(level) = verbosity.and_then(|v| v.parse::<u8>().ok()) {
        out.push(OsString::from(format!("--log-filter={}", if level >= 4 { "debug" } else { "info" })));
    }
    if cleanup {
        // Upstream's --cleanup removes what the proxy made and exits; only the flags cleanup
        // knows carry over (its own defaults otherwise).
        out.push(OsString::from("cleanup"));
        out.extend(kept.into_iter().filter(|a| a.to_str().is_some_and(|a| a.starts_with("--ipvs-exclude-cidrs"))));
    } else {
        out.push(OsString::from("run"));
        out.extend(kept);
    }
    Normalized { args: out, ignored, version }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize_str(args: &[&str]) -> (Vec<String>, Vec<String>, bool) {
        let n = normalize(args.iter().map(OsString::from).collect());
        (n.args.into_iter().map(|a| a.into_string().unwrap()).collect(), n.ignored, n.version)
    }

    /// kubeadm's DaemonSet runs exactly this.
    #[test]
    fn kubeadms_command_line_runs_the_daemon() {
        let (args, ignored, version) = normalize_str(&[
            "/usr/local/bin/kube-proxy",
            "--config=/var/lib/kube-proxy/config.conf",
            "--hostname-override=node-a",
        ]);
        assert_eq!(
            args,
            [
                "/usr/local/bin/kube-proxy",
                "run",
                "--config=/var/lib/kube-proxy/config.conf",
                "--hostname-override=node-a"
            ]
        );
        assert!(ignored.is_empty() && !version);
    }

    #[test]
    fn this_binarys_own_command_line_passes_unchanged() {
        for args in [
            &["kube-ipvs-proxy", "run", "--config", "x"][..],
            &["kube-ipvs-proxy", "debug", "status"],
            &["kube-ipvs-proxy", "node-settings", "--config", "x"],
            &["kube-ipvs-proxy", "--version"],
            &["kube-ipvs-proxy", "--help"],
        ] {
            assert_eq!(normalize_str(args).0, args, "{args:?}");
        }
        let (args, ..) = normalize_str(&["/usr/local/bin/kube-proxy", "debug", "status"]);
        assert_eq!(args, ["/usr/local/bin/kube-proxy", "debug", "status"]);
    }

    #[test]
    fn upstream_flags_that_do_not_apply_are_accepted_and_named_once() {
        let (args, ignored, _) = normalize_str(&[
            "kube-ipvs-proxy",
            "--v=2",
            "--feature-gates=A=true",
            "--log-file",
            "/var/log/kube-proxy.log",
            "--oom-score-adj=-999",
            "--profiling",
            "--logging-format=json",
            "--healthz-port=10256",
            "--not-a-kube-proxy-flag=1",
            "--master",
            "https://10.0.0.1:6443",
            "-profiling=false",
            "--kubeconfig=/k",
        ]);
        // An unknown flag is left for clap to refuse.
        assert_eq!(
            args,
            ["kube-ipvs-proxy", "--log-filter=info", "run", "--not-a-kube-proxy-flag=1", "--kubeconfig=/k"]
        );
        assert_eq!(
            ignored,
            [
                "--feature-gates",
                "--log-file",
                "--oom-score-adj",
                "--profiling",
                "--logging-format",
                "--healthz-port",
                "--master"
            ]
        );
    }

    #[test]
    fn cleanup_version_and_verbosity() {
        let (args, ..) = normalize_str(&["kube-proxy", "--cleanup", "--config=/c", "--ipvs-exclude-cidrs=10.0.0.0/8"]);
        assert_eq!(args, ["kube-proxy", "cleanup", "--ipvs-exclude-cidrs=10.0.0.0/8"]);
        assert!(normalize_str(&["kube-proxy", "--version"]).2);
        assert!(normalize_str(&["kube-proxy", "--version=true"]).2);
        assert!(!normalize_str(&["kube-proxy", "--version=false"]).2);
        assert_eq!(normalize_str(&["kube-proxy", "-v", "4"]).0, ["kube-proxy", "--log-filter=debug", "run"]);
        assert!(version_line().starts_with("Kubernetes v1."), "{}", version_line());
    }
}
