//! What the daemon's VM tests share: a fake API server on its own runtime thread, the real
//! `kube-ipvs-proxy run` as a child process pointed at it, objects as YAML, and readers of the
//! kernel's state through the real `ipvsadm` and `ip`.
//!
//! Everything here runs inside the test's network namespace ([`integration::in_netns`]):
//! threads and child processes started from the test thread inherit it, so the fake API
//! server's 127.0.0.1, the daemon's fixed metrics/health ports, its IPVS table and its
//! kube-ipvs0 are private to the test.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use integration::fake_api::{FakeApiConfig, FakeApiServer, Grants, Kind, TlsIdentity};
use integration::{Backend, ip, ipvsadm, proxy_binary};

/// Why the tests are ignored on the host.
pub const VM_ONLY: &str = "needs the VM kernel: run integration/test";

/// How long a test waits for what the daemon must do before failing. Generous: the VM
/// emulates its CPUs, tests run several daemons at once, and a CI host may be slower still
/// (a start took 28 s there once); a passing test never waits it out, it polls.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The daemon's sync period in these tests: repairs must happen within it.
pub const SYNC_PERIOD: Duration = Duration::from_secs(2);

/// The node the daemon runs as; its address is on the `node0` dummy link (see [`node_link`]).
pub const NODE: &str = "node-a";
/// The node's address, where NodePorts answer.
pub const NODE_IP: &str = "192.168.100.10";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Each test runs on a thread of its own ([`integration::in_netns`]), so this is the test's
    /// own: a daemon restarted within a test finds the record its predecessor left.
    static STATE_DIR: PathBuf = scratch("state");
}

/// The daemon's `--state-dir` (its ownership record) in the current test.
pub fn state_dir() -> PathBuf {
    STATE_DIR.with(|dir| dir.clone())
}

fn scratch(name: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("kip-daemon-test-{}-{n}-{name}", std::process::id()))
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`; panics naming `what`,
/// with the kernel's IPVS table as `ipvsadm -Ln` lists it then, when it never does.
pub fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}; kernel table now:\n{}", ipvsadm(&["-Ln"]).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gives the namespace a node address on a dummy link `node0`, as a node's NIC would have.
pub fn node_link() {
    ip(&["link", "add", "node0", "type", "dummy"]).unwrap();
    ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "node0"]).unwrap();
    ip(&["link", "set", "node0", "up"]).unwrap();
}

/// The common start of a daemon test: the node link, one backend `b1` (10.244.1.2:8080), and
/// a fake API server holding Service `web` (ClusterIP 10.96.0.10:80, NodePort 30080) with a
/// slice of that backend.
pub fn web_with_one_backend() -> (Backend, Cluster) {
    node_link();
    let b1 = Backend::start("b1", 1, 8080).unwrap();
    let cluster = Cluster::start();
    cluster.apply(&service_yaml("web", "10.96.0.10", Some(30080)));
    cluster.apply(&slice_yaml("web", &[&b1]));
    (b1, cluster)
}

/// A fake API server running on a runtime of its own, so that the test thread may block.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    server: Arc<Mutex<FakeApiServer>>,
    /// The kubeconfig file pointing at the server.
    pub kubeconfig: PathBuf,
    url: String,
    tls: Option<TlsIdentity>,
}

/// A kubeconfig as kubeadm writes for kube-proxy: the server, its CA file and a token file.
fn kubeadm_kubeconfig(url: &str, ca: &Path, token: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    certificate-authority: {}\n\
         \x20   server: {url}\ncontexts:\n- name: default\n  context:\n    cluster: default\n    user: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n    tokenFile: {}\n",
        ca.display(),
        token.display()
    )
}

impl Cluster {
    /// Starts an empty cluster with the node object [`NODE`]. The server grants the daemon
    /// exactly what `manifests/rbac.yaml` grants, so every daemon test also proves the
    /// manifests' RBAC is enough. It speaks HTTPS with a CA and a token as kubeadm's
    /// kubeconfig names them, as a real API server does: the daemon trusts that CA alone
    /// (with no CA named, the API client would load the system's whole trust store at start,
    /// seconds of a debug build under emulation).
    pub fn start() -> Cluster {
        let identity = TlsIdentity::new("127.0.0.1".parse().unwrap(), "kube-proxy-token").unwrap();
        Cluster::start_at("127.0.0.1:0".parse().unwrap(), Some(identity))
    }

    /// [`Cluster::start`] serving at `address`; with `tls`, HTTPS requiring its token, and a
    /// kubeconfig as kubeadm writes for kube-proxy (the CA and the token as files).
    pub fn start_at(address: SocketAddr, tls: Option<TlsIdentity>) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/rbac.yaml")).unwrap();
        let config = FakeApiConfig {
            rbac: Some(Grants::from_yaml(&rbac).unwrap()),
            tls: tls.clone(),
            ..FakeApiConfig::default()
        };
        let server = Self::block_on(&runtime, FakeApiServer::start(address, config)).unwrap();
        let url = server.url();
        let plain = server.kubeconfig();
        let server = Arc::new(Mutex::new(server));
        let cluster = Cluster { runtime: Some(runtime), server, kubeconfig: scratch("kubeconfig"), url, tls };
        // With TLS, the CA and token as files in this machine's own root.
        let (ca, token) = (scratch("ca.crt"), scratch("token"));
        let text = cluster
            .kubeconfig_under(Path::new("/"), &ca.display().to_string(), &token.display().to_string())
            .unwrap_or(plain);
        std::fs::write(&cluster.kubeconfig, text).unwrap();
        cluster.apply(&node_yaml());
        cluster
    }

    /// Lays the server's CA and token down under `root` at `ca` and `token` (absolute paths
    /// as seen from `root`, e.g. a container's service account mount) and returns a kubeconfig
    /// naming them there, as kubeadm's kube-proxy ConfigMap does. `None` for a plain HTTP one.
    pub fn kubeconfig_under(&self, root: &Path, ca: &str, token: &str) -> Option<String> {
        let identity = self.tls.as_ref()?;
        for (path, content) in [(ca, identity.ca_pem()), (token, identity.token())] {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent()?).unwrap();
            std::fs::write(file, content).unwrap();
        }
        Some(kubeadm_kubeconfig(&self.url, Path::new(ca), Path::new(token)))
    }

    /// Runs a future to completion on the server's runtime, from a helper thread: the test
    /// thread is itself inside a runtime, where blocking on another is refused.
    fn block_on<F: std::future::Future + Send>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
    where
        F::Output: Send,
    {
        std::thread::scope(|scope| scope.spawn(|| runtime.block_on(future)).join().unwrap())
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().unwrap()
    }

    fn server(&self) -> tokio::sync::MutexGuard<'_, FakeApiServer> {
        // Only stop/resume hold the lock, and they finish before returning to the test.
        self.server.try_lock().expect("the fake API server is busy")
    }

    /// Creates or replaces the objects of a YAML text.
    pub fn apply(&self, yaml: &str) {
        self.server().apply_text(yaml).unwrap();
    }

    /// Creates or replaces objects given as JSON (faster than YAML text for thousands).
    pub fn apply_objects(&self, objects: Vec<serde_json::Value>) {
        let server = self.server();
        for object in objects {
            server.apply(object).unwrap();
        }
    }

    /// Deletes one object.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        self.server().delete(kind, namespace, name).unwrap();
    }

    /// Forgets the watch history: watchers resuming from an older version get 410 Expired
    /// and must relist.
    pub fn compact(&self) {
        self.server().compact();
    }

    /// Holds (`true`) or lets go the continuations of paginated lists (see
    /// [`integration::fake_api::FakeApiServer::hold_continued_lists`]).
    pub fn hold_continued_lists(&self, hold: bool) {
        self.server().hold_continued_lists(hold);
    }

    /// Requests the server has answered.
    pub fn requests(&self) -> integration::fake_api::RequestCounts {
        self.server().requests()
    }

    /// Stops answering: connections are refused, watches end. The objects stay.
    pub fn stop(&self) {
        let server = self.server.clone();
        Self::block_on(self.runtime(), async move { server.lock().await.stop().await });
    }

    /// Serves again, same address, same objects and resourceVersions.
    pub fn resume(&self) {
        let server = self.server.clone();
        Self::block_on(self.runtime(), async move { server.lock().await.resume().await }).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The real daemon, `kube-ipvs-proxy run` against a [`Cluster`]; killed on drop.
pub struct Daemon {
    child: Child,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
    /// Its metrics address.
    pub metrics: SocketAddr,
    /// Its health address.
    pub healthz: SocketAddr,
}

impl Daemon {
    /// Starts the daemon for node [`NODE`] with a [`SYNC_PERIOD`] sync period and fixed local
    /// metrics/health ports (the namespace is the test's own).
    pub fn start(cluster: &Cluster) -> Daemon {
        Daemon::start_with_sync_period(cluster, SYNC_PERIOD)
    }

    /// [`Daemon::start`] with another sync period (whole seconds).
    pub fn start_with_sync_period(cluster: &Cluster, sync_period: Duration) -> Daemon {
        Daemon::start_with_sync_period_and_env(cluster, sync_period, &[])
    }

    /// [`Daemon::start_with_sync_period`] with extra environment variables (a log filter).
    pub fn start_with_sync_period_and_env(cluster: &Cluster, sync_period: Duration, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_env(
            cluster,
            &[
                format!("--sync-period={}s", sync_period.as_secs()),
                "--min-sync-period=0s".into(),
                "--metrics-bind-address=127.0.0.1:10249".into(),
                "--healthz-bind-address=127.0.0.1:10256".into(),
            ],
            env,
        )
    }

    /// `run --kubeconfig (the cluster's) --hostname-override NODE` plus `flags`; metrics and
    /// health are looked for on 127.0.0.1:10249 and 127.0.0.1:10256 (upstream's ports).
    pub fn start_with_flags(cluster: &Cluster, flags: &[String]) -> Daemon {
        Daemon::start_with_env(cluster, flags, &[])
    }

    /// [`Daemon::start_with_flags`] with extra environment variables (e.g. a `PATH` without `nft`).
    pub fn start_with_env(cluster: &Cluster, flags: &[String], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_under(cluster, &[], flags, env)
    }

    /// [`Daemon::start_with_env`] run by `wrapper` (a command and its arguments, e.g. `setpriv`
    /// with a capability set), which is given the daemon's command line to run.
    pub fn start_under(cluster: &Cluster, wrapper: &[&str], flags: &[String], env: &[(&str, &str)]) -> Daemon {
        let log = scratch("daemon.log");
        let (metrics, healthz): (SocketAddr, SocketAddr) =
            ("127.0.0.1:10249".parse().unwrap(), "127.0.0.1:10256".parse().unwrap());
        let binary = proxy_binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("run")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--hostname-override", NODE])
            .arg("--state-dir")
            .arg(state_dir())
            .args(flags)
            .env("KUBE_IPVS_PROXY_LOG", std::env::var("KIP_DAEMON_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Daemon { child, log, metrics, healthz }
    }

    /// Kills it with SIGKILL, as an OOM kill or a node crash would, and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `/metrics` text, None when it does not answer (yet).
    pub fn metrics_text(&self) -> Option<String> {
        let url = format!("http://{}/metrics", self.metrics);
        integration::run("curl", &["-fsS", "--max-time", "2", &url], None).ok()
    }

    /// The sum of every sample of `metric` (all label sets): 0 when its family is declared
    /// but has no sample yet (a counter never incremented), None when the daemon does not
    /// answer or does not export it.
    pub fn metric_sum(&self, metric: &str) -> Option<f64> {
        let text = self.metrics_text()?;
        let family = metric.strip_suffix("_total").unwrap_or(metric);
        let declared = text.lines().any(|l| l.starts_with(&format!("# TYPE {family} ")));
        let samples: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (declared || !samples.is_empty()).then(|| samples.iter().sum())
    }

    /// Waits until `/healthz` says 200: its first full sync is done, nftables elements and
    /// bound addresses included (virtual servers may be in the kernel before, added while the
    /// lists arrive, but unreachable until then).
    pub fn wait_ready(&self) {
        eventually("the daemon ready", Duration::from_secs(30), || (self.healthz_status() == 200).then_some(()));
    }

    /// The HTTP status of its `/healthz` (0 when it does not answer).
    pub fn healthz_status(&self) -> u16 {
        let url = format!("http://{}/healthz", self.healthz);
        integration::run("curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url], None)
            .ok()
            .and_then(|code| code.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_9();
        if std::thread::panicking() {
            eprintln!("---- daemon log {} ----\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The Node object of [`NODE`].
pub fn node_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels:\n    kubernetes.io/hostname: {NODE}\n\
         status:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n"
    )
}

/// A TCP Service `name` in namespace `default`: ClusterIP `cluster_ip`:80 to target port 8080,
/// and a NodePort when `node_port` is given.
pub fn service_yaml(name: &str, cluster_ip: &str, node_port: Option<u16>) -> String {
    let (kind, node_port) = match node_port {
        Some(port) => ("NodePort", format!("\n    nodePort: {port}")),
        None => ("ClusterIP", String::new()),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {kind}\n\
         \x20 clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  ipFamilies: [IPv4]\n  ports:\n\
         \x20 - name: http\n    port: 80\n    targetPort: 8080\n    protocol: TCP{node_port}\n"
    )
}

/// The EndpointSlice of Service `service` listing `backends` (ready, port 8080).
pub fn slice_yaml(service: &str, backends: &[&Backend]) -> String {
    slice_yaml_of(service, "http", "TCP", backends)
}

/// [`slice_yaml`] with port `port_name` of `protocol` (`TCP`, `UDP`, `SCTP`) on 8080.
pub fn slice_yaml_of(service: &str, port_name: &str, protocol: &str, backends: &[&Backend]) -> String {
    let mut endpoints = String::new();
    for backend in backends {
        endpoints.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: {NODE}\n",
            backend.addr_v4()
        ));
    }
    let endpoints = if endpoints.is_empty() { "[]\n".to_string() } else { format!("\n{endpoints}") };
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-slice\n  namespace: default\n\
         \x20 labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n\
         - name: {port_name}\n  port: 8080\n  protocol: {protocol}\nendpoints: {endpoints}"
    )
}

/// Numbered objects, for many Services at once (the scale benches, the tests of big lists):
/// Service `bench/svc-{i}` has ClusterIP 10.96.0.0 + i + 1, port 80 to 8080; its slice, named
/// after it (so both lists sort alike), endpoints from [`endpoint_ip`].
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = 10 << 24 | 96 << 16 | (i as u32 + 1);
    Ipv4Addr::from(n)
}

pub fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    // 10.(128+generation).x.y: distinct per Service, endpoint and change.
    let n = (i * 16 + j) as u32;
    Ipv4Addr::new(10, 128 + generation as u8, (n >> 8) as u8, n as u8)
}

pub fn service(i: usize) -> serde_json::Value {
    let ip = cluster_ip(i).to_string();
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

pub fn slice(i: usize, endpoints: &[Ipv4Addr]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

/// The kernel's IPVS table as `ipvsadm -Ln` prints it: virtual server (`TCP  10.96.0.10:80`)
/// to its real servers (`10.244.1.2:8080`) and their weights.
pub fn ipvs_table() -> BTreeMap<String, BTreeMap<String, u32>> {
    let listing = ipvsadm(&["-Ln"]).unwrap();
    let mut table: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut current = None;
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [proto @ ("TCP" | "UDP" | "SCTP"), vip, ..] => {
                let key = format!("{proto}  {vip}");
                table.entry(key.clone()).or_default();
                current = Some(key);
            }
            ["->", real, _forward, weight, ..] if *real != "RemoteAddress:Port" => {
                if let (Some(vs), Ok(weight)) = (&current, weight.parse()) {
                    table.entry(vs.clone()).or_default().insert(real.to_string(), weight);
                }
            }
            _ => {}
        }
    }
    table
}

/// The real servers of virtual server `vs` (`TCP  10.96.0.10:80`) that get new connections
/// (weight above 0); None when the virtual server does not exist.
pub fn serving_reals(vs: &str) -> Option<BTreeSet<String>> {
    ipvs_table().get(vs).map(|reals| reals.iter().filter(|(_, w)| **w > 0).map(|(r, _)| r.clone()).collect())
}

/// The set of `addresses` as `10.244.N.2:8080` strings, what [`serving_reals`] returns.
pub fn reals(backends: &[&Backend]) -> BTreeSet<String> {
    backends.iter().map(|b| format!("{}:{}", b.addr_v4(), b.port())).collect()
}

/// The addresses bound on kube-ipvs0 (none when the link does not exist).
pub fn bound_addresses() -> BTreeSet<String> {
    let Ok(text) = ip(&["-o", "addr", "show", "dev", "kube-ipvs0"]) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "inet" || *w == "inet6")?;
            Some(words.get(at + 1)?.split('/').next()?.to_string())
        })
        .collect()
}

/// Asks `addr` for a backend's name `count` times; returns the answers (errors as `error: ...`).
pub fn ask_many(addr: &str, count: usize) -> Vec<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    (0..count)
        .map(|_| integration::ask_name(addr, Duration::from_secs(2)).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

/// Sends requests back to back, in turn to each of its targets, until stopped; counts answers
/// (from a backend: a name starting with `b`) and failures. Its thread shares the calling
/// thread's network namespace.
pub struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Client {
    /// Starts asking `targets` (`address:port`), one after the other, round and round.
    pub fn start(targets: &[&str]) -> Client {
        let targets: Vec<SocketAddr> = targets.iter().map(|t| t.parse().unwrap()).collect();
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                for target in targets.iter().cycle() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match integration::ask_name(*target, Duration::from_secs(2)) {
                        Ok(name) if name.starts_with('b') => ok.fetch_add(1, Ordering::SeqCst),
                        Ok(other) => {
                            errors.push(format!("{target}: answer {other:?}"));
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(e) => {
                            errors.push(format!("{target}: {e}"));
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
                errors
            })
        };
        Client { stop, ok, failed, thread: Some(thread) }
    }

    /// Stops it; returns (answers, failures, failure messages).
    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.thread.take().map(|t| t.join().unwrap()).unwrap_or_default();
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), errors)
    }

    /// Answers so far.
    pub fn answered(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
}
