//! A quick check of the client against the real kernel (run as root where IPVS exists):
//! `integration/vm-run sh -c 'target/debug/examples/smoke && ipvsadm -Ln'`.
//! Exits non-zero at the first surprise.

use std::net::IpAddr;

use ipvs::{
    Client, DummyLink, ErrorKind, Family, ForwardMethod, Operation, Protocol, RealServer, ServiceFlags, Timeouts,
    TunnelType, VirtualServer, VirtualServerId,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn check(cond: bool, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    if cond {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}").into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let c = Client::connect().await?;
    let info = c.info().await?;
    println!("IPVS {} conn table {}", info.version_string(), info.conn_table_size);
    c.flush().await?;

    let tcp = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: ip("10.96.0.10"), port: 80 };
    let mut vs = VirtualServer::new(tcp, "rr");
    c.add_virtual_server(&vs).await?;
    let e = c.add_virtual_server(&vs).await.expect_err("second add");
    println!("  {e}");
    check(e.kind() == ErrorKind::Exists, "second add is Exists")?;
    check(c.is_present(&tcp).await?, "is_present")?;
    let got = c.get_virtual_server(&tcp).await?;
    check(got.server.scheduler == "rr" && got.server.netmask == 0xffff_ffff, "get rr /32")?;

    vs.scheduler = "wrr".into();
    vs.flags = ServiceFlags::PERSISTENT;
    vs.timeout = 300;
    vs.netmask = 0xffff_ff00;
    c.update_virtual_server(&vs).await?;
    let got = c.get_virtual_server(&tcp).await?;
    check(got.server.settable_eq(&vs), "update read back (wrr, persistent 300, /24)")?;

    let rs = RealServer {
        weight: 70000,
        upper_threshold: 100,
        lower_threshold: 10,
        ..RealServer::new(ip("10.244.1.2"), 8080, 1)
    };
    c.add_real_server(&tcp, &rs).await?;
    let tun = RealServer {
        forward: ForwardMethod::Tunnel { tunnel: TunnelType::Gue, port: 6080, flags: 1 },
        ..RealServer::new(ip("10.244.2.2"), 8080, 2)
    };
    c.add_real_server(&tcp, &tun).await?;
    let dr = RealServer { forward: ForwardMethod::Route, ..RealServer::new(ip("10.244.3.2"), 80, 3) };
    c.add_real_server(&tcp, &dr).await?;
    let mut listed: Vec<_> = c.list_real_servers(&tcp).await?.into_iter().map(|e| e.server).collect();
    listed.sort();
    let mut want = vec![rs, tun, dr];
    want.sort();
    check(listed == want, "real servers read back (weight 70000, thresholds, GUE tunnel, route)")?;
    let bad = RealServer { weight: u32::MAX, ..rs };
    let e = c.update_real_server(&tcp, &bad).await.expect_err("huge weight");
    println!("  {e}");
    check(e.kind() == ErrorKind::OutOfRange, "weight above i32::MAX is OutOfRange")?;
    c.delete_real_server(&tcp, &dr.id).await?;
    let e = c.delete_real_server(&tcp, &dr.id).await.expect_err("second delete");
    println!("  {e}");
    check(e.kind() == ErrorKind::NotFound, "second delete of a real server is NotFound")?;

    let v6 = VirtualServerId::Tuple { protocol: Protocol::Udp, addr: ip("fd00::10"), port: 53 };
    c.add_virtual_server(&VirtualServer::new(v6, "sh")).await?;
    c.add_real_server(&v6, &RealServer::new(ip("fd00:1::2"), 5353, 1)).await?;
    let fwm = VirtualServerId::Fwmark { family: Family::V4, mark: 7 };
    c.add_virtual_server(&VirtualServer::new(fwm, "lc")).await?;
    let sctp = VirtualServerId::Tuple { protocol: Protocol::Sctp, addr: ip("10.96.0.11"), port: 3868 };
    c.add_virtual_server(&VirtualServer::new(sctp, "mh")).await?;
    let e = c
        .add_virtual_server(&VirtualServer::new(
            VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: ip("10.96.0.12"), port: 1 },
            "xyz",
        ))
        .await
        .expect_err("unknown scheduler");
    println!("  {e}");
    check(e.kind() == ErrorKind::NotFound && e.to_string().contains("ip_vs_xyz"), "missing scheduler explained")?;

    let e =
        c.delete_virtual_server(&VirtualServerId::Fwmark { family: Family::V4, mark: 99 }).await.expect_err("absent");
    check(e.kind() == ErrorKind::NoSuchVirtualServer, "delete of an absent virtual server is NoSuchVirtualServer")?;
    check(!c.is_present(&VirtualServerId::Fwmark { family: Family::V4, mark: 99 }).await?, "is_present false")?;

    // A batch with a failure in the middle: the rest still happen.
    let b1 = VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: ip("10.96.1.1"), port: 443 };
    let ops = vec![
        Operation::AddVirtualServer(VirtualServer::new(b1, "rr")),
        Operation::AddRealServer(b1, RealServer::new(ip("10.244.9.1"), 443, 1)),
        Operation::AddRealServer(b1, RealServer::new(ip("10.244.9.1"), 443, 1)),
        Operation::AddRealServer(b1, RealServer::new(ip("10.244.9.2"), 443, 1)),
        Operation::DeleteVirtualServer(VirtualServerId::Fwmark { family: Family::V4, mark: 12345 }),
        Operation::UpdateRealServer(b1, RealServer::new(ip("10.244.9.2"), 443, 5)),
    ];
    let results = c.apply(&ops).await?;
    for (op, r) in ops.iter().zip(&results) {
        println!("  {op}: {:?}", r.as_ref().map_err(|e| e.to_string()));
    }
    let kinds: Vec<Option<ErrorKind>> = results.iter().map(|r| r.as_ref().err().map(|e| e.kind())).collect();
    check(
        kinds == [None, None, Some(ErrorKind::Exists), None, Some(ErrorKind::NoSuchVirtualServer), None],
        "batch results in order, failures not stopping the rest",
    )?;

    c.set_timeouts(&Timeouts { tcp: 900, tcp_fin: 120, udp: 300 }).await?;
    check(c.timeouts().await? == Timeouts { tcp: 900, tcp_fin: 120, udp: 300 }, "timeouts set and read")?;
    c.zero(Some(&tcp)).await?;
    c.zero(None).await?;

    let table = c.table().await?;
    check(table.services.len() == 5, "table has 5 virtual servers")?;
    for (vs, rss) in &table.services {
        println!(
            "  {} {} flags {:#x} -> {} real servers",
            vs.server.id,
            vs.server.scheduler,
            vs.server.flags.bits(),
            rss.len()
        );
    }

    // A call abandoned half-way must not confuse the next one.
    for _ in 0..20 {
        let _ = tokio::time::timeout(std::time::Duration::from_micros(50), c.table()).await;
        check(c.list_virtual_servers().await?.len() == 5, "a call after a cancelled one sees the table")?;
    }

    let link = DummyLink::ensure("kube-ipvs0").await?;
    let again = DummyLink::ensure("kube-ipvs0").await?;
    check(again.index() == link.index(), "ensure is idempotent")?;
    for a in ["10.96.0.10", "fd00::10"] {
        link.add_address(ip(a)).await?;
        link.add_address(ip(a)).await?;
    }
    let mut addrs = link.addresses().await?;
    addrs.sort();
    check(addrs == vec![ip("10.96.0.10"), ip("fd00::10")], "link addresses")?;
    link.remove_address(ip("10.96.0.10")).await?;
    link.remove_address(ip("10.96.0.10")).await?;
    check(link.addresses().await? == vec![ip("fd00::10")], "remove is idempotent")?;
    check(DummyLink::open("nope0").await?.is_none(), "open of a missing link is None")?;
    if std::env::var_os("KEEP_LINK").is_none() {
        link.delete().await?;
        check(DummyLink::open("kube-ipvs0").await?.is_none(), "deleted")?;
    }
    println!("smoke: all good");
    Ok(())
}

trait SettableEq {
    fn settable_eq(&self, other: &VirtualServer) -> bool;
}

impl SettableEq for VirtualServer {
    fn settable_eq(&self, other: &VirtualServer) -> bool {
        VirtualServer { flags: self.flags.settable(), ..self.clone() } == *other
    }
}
