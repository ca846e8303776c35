//! Kernel-side bench, on the VM kernel (run by `integration/bench`, not on the host): programs
//! 2,000 virtual servers with 10 real servers each from empty, once with the client's batch
//! call (`Client::apply`) and once with `ipvsadm -R` of the same rules, and lists them back with
//! `Client::table` and with `ipvsadm -Ln`; prints each time (median of the rounds) and the
//! ratios against `ipvsadm`, measured in the same run. Targets: batch >= 3x faster than
//! `ipvsadm -R`; listing at least as fast as `ipvsadm -Ln`.
//!
//! `KIP_BENCH_SERVICES`, `KIP_BENCH_REALS` and `KIP_BENCH_ROUNDS` change the sizes (defaults
//! 2000, 10, 3).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use integration::{in_netns, ipvsadm, ipvsadm_restore, proxy_binary, restore_script};
use ipvs::{Client, Operation, Protocol, RealServer, VirtualServer, VirtualServerId};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `services` virtual servers `10.100.x.y:80` (alternating rr / wrr), each with `reals`
/// masquerading real servers on distinct addresses.
fn operations(services: usize, reals: usize) -> Vec<Operation> {
    let mut ops = Vec::with_capacity(services * (reals + 1));
    for i in 0..services {
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + i as u32 + 1));
        let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr, port: 80 };
        ops.push(Operation::AddVirtualServer(VirtualServer::new(id, if i % 2 == 0 { "rr" } else { "wrr" })));
        for j in 0..reals {
            let real = IpAddr::V4(Ipv4Addr::from(0x0ac8_0000 + (i * reals + j) as u32 + 1));
            ops.push(Operation::AddRealServer(id, RealServer::new(real, 8080, j as u32 + 1)));
        }
    }
    ops
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    batch: Duration,
    restore: Duration,
    table: Duration,
    ipvsadm_list: Duration,
    debug_status: Option<Duration>,
}

/// What one programming of the table from empty measured.
struct ClientRun {
    batch: Duration,
    table: Duration,
    ipvsadm_list: Duration,
    debug_status: Option<Duration>,
}

/// Programs `ops` with the client's batch call and lists the result three ways.
async fn client_run(ops: Vec<Operation>, services: usize, reals: usize) -> ClientRun {
    let c = Client::connect().await.expect("IPVS in the VM kernel");
    let start = Instant::now();
    let results = c.apply(&ops).await.expect("batch");
    let batch = start.elapsed();
    if let Some((op, Err(e))) = ops.iter().zip(&results).find(|(_, r)| r.is_err()) {
        panic!("{op}: {e}");
    }
    let start = Instant::now();
    let listed = c.table().await.expect("table");
    let table = start.elapsed();
    assert_eq!(listed.services.len(), services);
    assert_eq!(listed.services.iter().map(|(_, r)| r.len()).sum::<usize>(), services * reals);
    let start = Instant::now();
    let text = ipvsadm(&["-Ln"]).expect("ipvsadm -Ln");
    let ipvsadm_list = start.elapsed();
    assert_eq!(text.lines().count(), 3 + services * (reals + 1), "ipvsadm -Ln lines");
    let proxy = proxy_binary();
    let debug_status = proxy.exists().then(|| {
        let start = Instant::now();
        let out = Command::new(&proxy).args(["debug", "status", "--numeric"]).output().expect("debug status");
        let took = start.elapsed();
        assert!(
            out.status.success() && out.stdout == text.as_bytes(),
            "debug status --numeric differs from ipvsadm -Ln"
        );
        took
    });
    ClientRun { batch, table, ipvsadm_list, debug_status }
}

/// Programs `script` with `ipvsadm -R`; checks with the client that everything is there.
async fn ipvsadm_run(script: String, services: usize) -> Duration {
    let start = Instant::now();
    ipvsadm_restore(&script).expect("ipvsadm -R");
    let took = start.elapsed();
    let c = Client::connect().await.expect("IPVS in the VM kernel");
    assert_eq!(c.table().await.expect("table").services.len(), services, "ipvsadm -R programmed every virtual server");
    took
}

/// Each programming runs in a fresh network namespace: "from empty" must include the kernel's
/// per-namespace trash of deleted real servers, which every add scans, so a flush between runs
/// would make whichever side runs after it pay for the other's 20,000 deleted real servers.
/// The order alternates between rounds, and a pause lets the kernel tear down the previous
/// namespace before the next timing starts.
fn measure(services: usize, reals: usize, rounds: usize) -> Figures {
    let ops = operations(services, reals);
    let script = restore_script(&ops);
    let (mut batch, mut restore, mut table, mut ipvsadm_list, mut debug_status) =
        (vec![], vec![], vec![], vec![], vec![]);
    let settle = || std::thread::sleep(Duration::from_secs(3));
    for round in 0..rounds {
        let run_client = |ops: Vec<Operation>| in_netns(move || client_run(ops, services, reals));
        let run_ipvsadm = |script: String| in_netns(move || ipvsadm_run(script, services));
        let (client, restored) = if round % 2 == 0 {
            let client = run_client(ops.clone());
            settle();
            let restored = run_ipvsadm(script.clone());
            (client, restored)
        } else {
            let restored = run_ipvsadm(script.clone());
            settle();
            (run_client(ops.clone()), restored)
        };
        settle();
        println!(
            "round {}: batch {:.0} ms, ipvsadm -R {:.0} ms, table {:.0} ms, ipvsadm -Ln {:.0} ms",
            round + 1,
            ms(client.batch),
            ms(restored),
            ms(client.table),
            ms(client.ipvsadm_list)
        );
        batch.push(client.batch);
        restore.push(restored);
        table.push(client.table);
        ipvsadm_list.push(client.ipvsadm_list);
        debug_status.extend(client.debug_status);
    }
    Figures {
        batch: median(batch),
        restore: median(restore),
        table: median(table),
        ipvsadm_list: median(ipvsadm_list),
        debug_status: (!debug_status.is_empty()).then(|| median(debug_status)),
    }
}

fn main() -> ExitCode {
    let services = env_or("KIP_BENCH_SERVICES", 2000);
    let reals = env_or("KIP_BENCH_REALS", 10);
    let rounds = env_or("KIP_BENCH_ROUNDS", 3).max(1);
    println!("kernel_ops: {services} virtual servers x {reals} real servers, {rounds} rounds (medians below)");
    let f = measure(services, reals, rounds);
    let writes = services * (reals + 1);
    let program_ratio = f.restore.as_secs_f64() / f.batch.as_secs_f64();
    let list_ratio = f.ipvsadm_list.as_secs_f64() / f.table.as_secs_f64();
    println!("| measure | client | ipvsadm | ratio (ipvsadm / client) | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| program {writes} writes from empty | {:.0} ms (`Client::apply`) | {:.0} ms (`ipvsadm -R`) | {program_ratio:.2}x | >= 3x: {} |",
        ms(f.batch),
        ms(f.restore),
        if program_ratio >= 3.0 { "met" } else { "MISSED" }
    );
    println!(
        "| list {services} + {} entries | {:.0} ms (`Client::table`) | {:.0} ms (`ipvsadm -Ln`) | {list_ratio:.2}x | >= 1x: {} |",
        services * reals,
        ms(f.table),
        ms(f.ipvsadm_list),
        if list_ratio >= 1.0 { "met" } else { "MISSED" }
    );
    if let Some(d) = f.debug_status {
        println!(
            "| list + print (`kube-ipvs-proxy debug status --numeric`, same bytes) | {:.0} ms | {:.0} ms | {:.2}x | |",
            ms(d),
            ms(f.ipvsadm_list),
            f.ipvsadm_list.as_secs_f64() / d.as_secs_f64()
        );
    }
    if program_ratio >= 3.0 && list_ratio >= 1.0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
