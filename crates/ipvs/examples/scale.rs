//! Measures the client against `ipvsadm` in the same run (root, real IPVS; e.g. in the VM):
//! programs N virtual servers with M real servers each with `ipvsadm -R` and with
//! [`Client::apply`], and lists them with `ipvsadm -Ln` and [`Client::table`]; prints the
//! times and the ratios. Usage: `scale [N] [M]` (default 2000 10).
//!
//! Each tool runs in a fresh network namespace: IPVS keeps deleted real servers in a per-namespace
//! trash list for minutes and scans it on every add, so the second tool in a shared namespace
//! would pay for the first one's leftovers.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvs::{Client, Operation, Protocol, RealServer, VirtualServer, VirtualServerId};

fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Real server `j` of service `i`: distinct for every pair (j < 150).
fn rip(i: usize, j: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 100 + j as u8, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn best_of<F: FnMut() -> Result<(), Box<dyn std::error::Error>>>(
    n: usize,
    mut f: F,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed());
    }
    Ok(best)
}

/// Moves this thread (and the processes it spawns) into a new network namespace with `lo` up.
fn fresh_netns() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: unshare takes no pointers; it only changes this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()).into());
    }
    let status = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
    if !status.success() {
        return Err("ip link set lo up failed".into());
    }
    Ok(())
}

fn ipvsadm(args: &[&str], stdin: Option<&[u8]>) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new("ipvsadm")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("ipvsadm {args:?}: {status}").into());
    }
    Ok(())
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Checks that the table holds `n` virtual servers with `m` real servers each.
async fn check_table(client: &Client, n: usize, m: usize, who: &str) -> Res<()> {
    let table = client.table().await?;
    let dests: usize = table.services.iter().map(|(_, d)| d.len()).sum();
    if table.services.len() != n || dests != n * m {
        return Err(format!("{who} made {} services / {dests} destinations", table.services.len()).into());
    }
    Ok(())
}

/// `ipvsadm -R` then `ipvsadm -Ln` (best of 3) in a fresh namespace, emptied afterwards.
async fn run_ipvsadm(rules: &str, n: usize, m: usize) -> Res<(Duration, Duration)> {
    fresh_netns()?;
    let client = Client::connect().await?;
    let t = Instant::now();
    ipvsadm(&["-R"], Some(rules.as_bytes()))?;
    let restore = t.elapsed();
    check_table(&client, n, m, "ipvsadm -R").await?;
    let list = best_of(3, || ipvsadm(&["-Ln"], None))?;
    // Empty the namespace, or tearing down its 22,000 objects competes with what follows.
    client.flush().await?;
    Ok((restore, list))
}

/// [`Client::apply`] then [`Client::table`] (best of 3) in a fresh namespace, emptied afterwards.
async fn run_ours(ops: &[Operation], n: usize, m: usize) -> Res<(Duration, Duration)> {
    fresh_netns()?;
    let client = Client::connect().await?;
    let t = Instant::now();
    let results = client.apply(ops).await?;
    let apply = t.elapsed();
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err()).take(3).map(|e| e.to_string()).collect();
    if !failed.is_empty() {
        return Err(format!("apply failures, e.g. {failed:?}").into());
    }
    check_table(&client, n, m, "Client::apply").await?;
    let mut list = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let table = client.table().await?;
        list = list.min(t.elapsed());
        std::hint::black_box(table);
    }
    client.flush().await?;
    Ok((apply, list))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let m: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10).min(150);

    let mut ops = Vec::with_capacity(n * (m + 1));
    let mut rules = String::new();
    for i in 0..n {
        let id = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: vip(i), port: 80 };
        ops.push(Operation::AddVirtualServer(VirtualServer::new(id, "rr")));
        rules.push_str(&format!("-A -t {}:80 -s rr\n", vip(i)));
        for j in 0..m {
            let rs = RealServer::new(rip(i, j), 8080, 1);
            ops.push(Operation::AddRealServer(id, rs));
            rules.push_str(&format!("-a -t {}:80 -r {}:8080 -m -w 1\n", vip(i), rip(i, j)));
        }
    }
    // SCALE_ORDER=ours-first swaps the order, to show that it does not decide the outcome.
    let ours_first = std::env::var("SCALE_ORDER").is_ok_and(|v| v == "ours-first");
    let (restore, list_ipvsadm, apply, list_ours) = if ours_first {
        let (apply, list_ours) = run_ours(&ops, n, m).await?;
        let (restore, list_ipvsadm) = run_ipvsadm(&rules, n, m).await?;
        (restore, list_ipvsadm, apply, list_ours)
    } else {
        let (restore, list_ipvsadm) = run_ipvsadm(&rules, n, m).await?;
        let (apply, list_ours) = run_ours(&ops, n, m).await?;
        (restore, list_ipvsadm, apply, list_ours)
    };

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("scale: {n} virtual servers x {m} real servers ({} writes)", ops.len());
    println!(
        "program: ipvsadm -R {:9.1} ms | Client::apply {:9.1} ms | speed-up {:5.1}x",
        ms(restore),
        ms(apply),
        ms(restore) / ms(apply)
    );
    println!(
        "list:    ipvsadm -Ln {:8.1} ms | Client::table {:9.1} ms | speed-up {:5.1}x",
        ms(list_ipvsadm),
        ms(list_ours),
        ms(list_ipvsadm) / ms(list_ours)
    );
    Ok(())
}
