//! `debug render` as a user runs it: the built binary on YAML fixtures, checking stdout, stderr
//! and the exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kube-ipvs-proxy");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Runs the binary with `args`, feeding `stdin` (for `-f -`).
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("KUBE_IPVS_PROXY_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn cluster_file() -> String {
    format!("{FIXTURES}/cluster.yaml")
}

/// The reviewed rendering of `cluster.yaml` for node-a: ExternalTrafficPolicy Local keeps only
/// node-a's endpoint on the NodePort and LoadBalancer, the not-ready endpoint is left out,
/// the headless Service gets nothing, and ipvsadm's sort puts 192.168/16 before 10/8.
#[test]
fn renders_a_cluster_as_ipvsadm_lists_it() {
    let file = cluster_file();
    let args = [
        "debug",
        "render",
        "-f",
        &file,
        "--node-name",
        "node-a",
        "--node-ip",
        "192.168.1.10",
        "--cluster-cidr",
        "10.244.0.0/16",
    ];
    let out = run(&args, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(format!("{FIXTURES}/cluster.render.txt")).unwrap();
    assert_eq!(text(&out.stdout), expected);
    assert!(text(&out.stderr).contains("ignored v1 ConfigMap default/settings"), "{}", text(&out.stderr));
}

#[test]
fn node_and_scheduler_flags_change_the_rendering() {
    let file = cluster_file();
    // Another node: edge's local endpoint is node-b's now, and NodePorts listen on its address.
    let out = run(&["debug", "render", "-f", &file, "--node-name", "node-b", "--node-ip", "192.168.1.11"], "");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("TCP  192.168.1.11:31443 rr\n#  service default/edge:https (NodePort)\n  -> 10.244.2.8:8443 ")
    );
    assert!(!stdout.contains("192.168.1.10"), "{stdout}");
    // Without --node-ip, NodePorts listen on the Node object's InternalIP.
    let out = run(&["debug", "render", "-f", &file, "--node-name", "node-a"], "");
    assert!(text(&out.stdout).contains("TCP  192.168.1.10:30443 rr persistent 600\n"), "{}", text(&out.stdout));
    let out = run(&["debug", "render", "-f", &file, "--node-name", "node-c"], "");
    assert!(!text(&out.stdout).contains(":30443"), "no Node object, no --node-ip: no NodePort addresses");
    let out = run(&["debug", "render", "-f", &file, "--node-name", "node-a", "--scheduler", "wlc"], "");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("TCP  10.96.0.10:80 wlc\n"), "{stdout}");
    assert!(!stdout.contains(" rr"), "{stdout}");
}

#[test]
fn json_carries_the_desired_state() {
    let file = cluster_file();
    let out =
        run(&["debug", "render", "-f", &file, "--node-name", "node-a", "--node-ip", "192.168.1.10", "--json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let servers = json["virtual_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 8);
    let web = servers.iter().find(|vs| vs["origin"]["service"]["name"] == "web").unwrap();
    assert_eq!(web["server"]["id"]["Tuple"]["addr"], "10.96.0.10");
    let backends: Vec<&str> =
        web["real_servers"].as_array().unwrap().iter().map(|r| r["id"]["addr"].as_str().unwrap()).collect();
    assert_eq!(backends, ["10.244.1.5", "10.244.2.7"]);
    // (kind of edge's virtual server, its source ranges as text)
    let edge = |kind: &str| servers.iter().find(|vs| vs["origin"]["service"]["name"] == "edge" && vs["kind"] == kind);
    for (kind, ranges) in
        [("LoadBalancer", serde_json::json!(["198.51.100.0/24"])), ("NodePort", serde_json::json!([]))]
    {
        assert_eq!(edge(kind).unwrap()["source_ranges"], ranges, "{kind}");
    }
    let addresses: Vec<&str> = json["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(addresses, ["10.96.0.10", "10.96.0.53", "10.96.1.20", "10.96.2.30", "203.0.113.7"]);
    assert_eq!(json["skipped"], serde_json::json!(["v1 ConfigMap default/settings"]));
}

/// Bad input: a message naming the document (index, kind, name) and the field; exit status 1;
/// nothing on stdout; no panic.
#[test]
fn bad_files_are_refused_with_the_document_and_field() {
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default}\naddressType: IPv4\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{service}spec:\n  ports:\n  - {{port: eighty}}\n"),
            "-: document 1 (Service web): spec.ports[0].port: invalid type: string \"eighty\", expected i32",
        ),
        (
            format!("{service}spec: {{clusterIP: 10.96.0.10}}\n---\n{slice}endpoints:\n- addresses: 10.244.1.1\n"),
            "-: document 2 (EndpointSlice web-1): endpoints[0].addresses: invalid type: string \"10.244.1.1\", expected a sequence",
        ),
        ("---\n---\nkind: [unclosed\n".to_string(), "not YAML: unclosed bracket '[' at line 3, column 7"),
        (format!("{service}spec: [1, 2]\n"), "-: document 1 (Service web): spec: invalid type: sequence"),
    ];
    for (input, expected) in cases {
        let out = run(&["debug", "render", "-f", "-", "--node-name", "node-a"], &input);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "for input\n{input}\nstderr was:\n{stderr}");
        assert!(out.stdout.is_empty());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let out = run(&["debug", "render", "-f", "/nonexistent/objects.yaml", "--node-name", "node-a"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/objects.yaml"), "{}", text(&out.stderr));
}

/// What the model cannot use is reported on stderr and left out; the rest is still rendered.
#[test]
fn model_warnings_go_to_stderr() {
    let input = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: \
                 {ipvs.kube-ipvs-proxy.io/scheduler: fastest}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n";
    let out = run(&["debug", "render", "-f", "-", "--node-name", "node-a"], input);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning: Service default/web: ") && stderr.contains("fastest"), "{stderr}");
    assert!(text(&out.stdout).contains("TCP  10.96.0.10:80 rr\n#  service default/web (ClusterIP)\n"));
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    let file = cluster_file();
    let cases: [(&[&str], &str); 3] = [
        (&["--scheduler", "fastest"], "unknown IPVS scheduler"),
        (&["--node-ip", "300.1.1.1"], "--node-ip"),
        (&["--cluster-cidr", "10.0.0.0/99"], "--cluster-cidr"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["debug", "render", "-f", &file, "--node-name", "node-a"];
        args.extend_from_slice(extra);
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(2), "clap's usage error status");
        assert!(text(&out.stderr).contains(expected), "{}", text(&out.stderr));
    }
}

/// The differential check an operator would run before switching: the same 24 Services that
/// upstream kube-proxy 1.30.3 programmed (`tests/fixtures/upstream-1.30`), rendered for the same
/// node, give the same IPVS table and the same kube-ipvs0 addresses, but for the deliberate
/// differences documented in the model's README. Today there is one: a NodePort of an
/// `externalTrafficPolicy: Local` Service without a local endpoint, to which upstream falls
/// back with every remote endpoint (its bug) and this proxy sends nothing.
#[test]
fn renders_what_upstream_programs_but_for_the_deliberate_differences() {
    let dir = format!("{FIXTURES}/upstream-1.30");
    let file = format!("{dir}/cluster.yaml");
    let args = [
        "debug",
        "render",
        "-f",
        &file,
        "--node-name",
        "node-a",
        "--node-ip",
        "192.168.100.10",
        "--node-ip",
        "fd00:100::10",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--cluster-cidr",
        "fd00:244::/64",
    ];
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    let (table, addresses) = rendered.split_once("\nkube-ipvs0 addresses").unwrap();
    let ours: Vec<&str> = table.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let upstream = std::fs::read_to_string(format!("{dir}/ipvsadm-Ln.txt")).unwrap();
    // Upstream's listing starts with the kernel's version line, which a rendering has not.
    let theirs: Vec<&str> = upstream.lines().skip(1).collect();
    // (virtual server, real server lines only upstream has): the deliberate differences.
    let deliberate: &[(&str, &[&str])] = &[("TCP  192.168.100.10:30085 rr", &["10.244.2.10:8080", "10.244.2.11:8080"])];
    let mut expected: Vec<&str> = Vec::new();
    let mut current = "";
    for line in &theirs {
        if !line.starts_with("  ->") {
            current = line.trim_end();
        }
        let only_upstream = deliberate
            .iter()
            .any(|(vs, reals)| current == *vs && reals.iter().any(|r| line.starts_with(&format!("  -> {r} "))));
        if !only_upstream {
            expected.push(line);
        }
    }
    assert_eq!(expected.len(), theirs.len() - 2, "the deliberate differences are still upstream's");
    assert_eq!(ours, expected, "rendered vs upstream's ipvsadm -Ln, deliberate differences removed");

    let mut our_addresses: Vec<&str> = addresses.lines().skip(1).map(str::trim).collect();
    our_addresses.sort_unstable();
    let listing = std::fs::read_to_string(format!("{dir}/kube-ipvs0.txt")).unwrap();
    let mut their_addresses: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("inet ").or_else(|| l.trim().strip_prefix("inet6 ")))
        .filter_map(|rest| rest.split('/').next())
        .collect();
    their_addresses.sort_unstable();
    assert_eq!(our_addresses, their_addresses, "kube-ipvs0 addresses");
}

/// kube-proxy's command line as kubeadm and operators write it reaches the daemon: no
/// subcommand, Go-style flags of upstream's that do not apply named in one warning, never the
/// usage error (exit status 2) that put every node in CrashLoopBackOff. A configuration file
/// that does not exist stops it right after parsing (exit status 1), before any kernel access.
#[test]
fn kube_proxys_command_line_is_accepted() {
    let out = run(
        &[
            "--config=/nonexistent/kube-proxy/config.conf",
            "--hostname-override=node-a",
            "--v=2",
            "--feature-gates=SomeGate=true",
            "--log-file=/var/log/kube-proxy.log",
            "--oom-score-adj=-999",
            "--profiling",
        ],
        "",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "kube-proxy flags accepted but not applied by this proxy: --feature-gates, --log-file, \
             --oom-score-adj, --profiling"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/kube-proxy/config.conf"), "{stderr}");
    let version = run(&["--version"], "");
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).starts_with("kube-ipvs-proxy "), "this binary's own --version");
}
